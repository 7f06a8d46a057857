import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { OffsetsDetail_Kind, OffsetsDetailSchema } from "./gen/tributary/v1/gateway_pb.js";
import { Position } from "./position.js";

export { Code };

/** A field at fault, from `google.rpc.BadRequest`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** What `tributary.v1.OffsetsDetail` says the offsets are. */
export type OffsetsKind = "EARLIEST" | "RESUME" | "LATEST";

/**
 * A gateway error with its `google.rpc.Status` details decoded (from the
 * `grpc-status-details-bin` trailer). Unknown details are ignored.
 */
export class TributaryError extends Error {
  override readonly name = "TributaryError";
  /** The gRPC status code (`Code.NotFound` is 5, as in gRPC). */
  readonly code: Code;
  /** The status message as the gateway sent it (`message` adds the code's name in front). */
  readonly rawMessage: string;
  /** `google.rpc.ErrorInfo.reason`, e.g. `OFFSET_TOO_OLD`; "" without an ErrorInfo. */
  readonly reason: string;
  /** `google.rpc.ErrorInfo.domain`; "" without an ErrorInfo. */
  readonly domain: string;
  /** `google.rpc.ErrorInfo.metadata`. */
  readonly metadata: Record<string, string>;
  /** `google.rpc.BadRequest.field_violations`. */
  readonly fieldViolations: FieldViolation[];
  /** `tributary.v1.OffsetsDetail.kind`, when the error carries offsets. */
  readonly offsetsKind: OffsetsKind | undefined;
  /** `tributary.v1.OffsetsDetail.offsets`, when the error carries offsets. */
  readonly offsets: Position | undefined;

  constructor(init: {
    code: Code;
    rawMessage: string;
    reason?: string;
    domain?: string;
    metadata?: Record<string, string>;
    fieldViolations?: FieldViolation[];
    offsetsKind?: OffsetsKind;
    offsets?: Position;
    cause?: unknown;
  }) {
    const reason = init.reason ?? "";
    super(`[${codeName(init.code)}]${reason ? ` ${reason}:` : ""} ${init.rawMessage}`, { cause: init.cause });
    this.code = init.code;
    this.rawMessage = init.rawMessage;
    this.reason = reason;
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.offsetsKind = init.offsetsKind;
    this.offsets = init.offsets;
  }

  /** The code's name as gRPC spells it: `NOT_FOUND`, `OUT_OF_RANGE`, … */
  get codeName(): string {
    return codeName(this.code);
  }
}

/** `Code.OutOfRange` → `OUT_OF_RANGE`. */
export function codeName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  const name = Code[code];
  return name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : `CODE_${code}`;
}

/** Turns any error of a call (a `ConnectError`, or anything thrown) into a `TributaryError`. */
export function toTributaryError(err: unknown): TributaryError {
  if (err instanceof TributaryError) return err;
  const connect = ConnectError.from(err);
  let reason: string | undefined;
  let domain: string | undefined;
  let metadata: Record<string, string> | undefined;
  const fieldViolations: FieldViolation[] = [];
  let offsetsKind: OffsetsKind | undefined;
  let offsets: Position | undefined;
  try {
    const info = connect.findDetails(ErrorInfoSchema)[0];
    if (info) {
      reason = info.reason;
      domain = info.domain;
      metadata = { ...info.metadata };
    }
    for (const bad of connect.findDetails(BadRequestSchema)) {
      for (const v of bad.fieldViolations) fieldViolations.push({ field: v.field, description: v.description });
    }
    const detail = connect.findDetails(OffsetsDetailSchema)[0];
    if (detail) {
      const kind = OffsetsDetail_Kind[detail.kind];
      offsetsKind = kind === "EARLIEST" || kind === "RESUME" || kind === "LATEST" ? kind : undefined;
      offsets = Position.fromOffsets(detail.offsets);
    }
  } catch {
    // Details that do not decode are ignored, like unknown ones.
  }
  return new TributaryError({
    code: connect.code,
    rawMessage: connect.rawMessage,
    reason,
    domain,
    metadata,
    fieldViolations,
    offsetsKind,
    offsets,
    cause: err,
  });
}
