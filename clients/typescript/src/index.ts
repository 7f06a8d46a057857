export { createClient, type ClientOptions, type TributaryClient } from "./client.js";
export {
  follow,
  type Change,
  type ChangeHeader,
  type FollowOptions,
  type Handler,
  type KeyFilterOption,
  type RecordFilterOption,
  type TranslatorOption,
} from "./follow.js";
export { followFleet, type FleetOptions } from "./fleet.js";
export { Position, type PartitionOffsetInit, type PartitionOffsetValue } from "./position.js";
export { FileStore, MemoryStore, type Store } from "./store.js";
export { Code, TributaryError, codeName, toTributaryError, type FieldViolation, type OffsetsKind } from "./errors.js";
export * from "./gen/tributary/v1/gateway_pb.js";
export * from "./gen/tributary/v1/subscriptions_pb.js";
export * from "./gen/tributary/v1/translators_pb.js";
