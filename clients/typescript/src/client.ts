import { createHash } from "node:crypto";
import { createClient as createConnectClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";
import { Gateway } from "./gen/tributary/v1/gateway_pb.js";
import { Subscriptions } from "./gen/tributary/v1/subscriptions_pb.js";
import { Translators, type TranslatorVersion, type UploadTranslatorRequest } from "./gen/tributary/v1/translators_pb.js";
import { create } from "@bufbuild/protobuf";
import { UploadTranslatorRequestSchema } from "./gen/tributary/v1/translators_pb.js";
import { toTributaryError } from "./errors.js";

export interface ClientOptions {
  /**
   * The gateway: `host:port` (plain HTTP/2, or TLS when `ca` is given), or a URL
   * `http://host:port` / `https://host:port`.
   */
  target: string;
  /** Bearer token, sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** PEM CA certificate(s) to verify the gateway with; turns TLS on. */
  ca?: string | Buffer;
  /** PEM client certificate chain for mutual TLS (with `key`). */
  cert?: string | Buffer;
  /** PEM private key of `cert`. */
  key?: string | Buffer;
  /** The name to verify the gateway's certificate against (default: the target's host). */
  serverName?: string;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
}

export interface TributaryClient {
  /** `tributary.v1.Gateway`: DescribeTopics, GetSnapshot, Subscribe. */
  readonly gateway: Client<typeof Gateway>;
  /** `tributary.v1.Translators`: Upload, List, Describe, Delete. */
  readonly translators: Client<typeof Translators>;
  /** `tributary.v1.Subscriptions`: Commit, List, Describe, Delete. */
  readonly subscriptions: Client<typeof Subscriptions>;
  /**
   * Uploads a translator component (its size and SHA-256 in the header, then 1 MiB chunks).
   * Rejects with a `TributaryError`.
   */
  uploadTranslator(name: string, bytes: Uint8Array): Promise<TranslatorVersion>;
  /** Closes the HTTP/2 connection; calls still open fail. */
  close(): void;
}

const CHUNK_BYTES = 1 << 20;

/** Connects to a gateway (lazily: the connection opens at the first call). */
export function createClient(options: ClientOptions): TributaryClient {
  const tls = options.ca !== undefined || options.cert !== undefined;
  const baseUrl = /^https?:\/\//.test(options.target) ? options.target : `${tls ? "https" : "http"}://${options.target}`;
  const nodeOptions: SecureClientSessionOptions = {};
  if (options.ca !== undefined) nodeOptions.ca = options.ca;
  if (options.cert !== undefined) nodeOptions.cert = options.cert;
  if (options.key !== undefined) nodeOptions.key = options.key;
  if (options.serverName !== undefined) nodeOptions.servername = options.serverName;
  const sessionManager = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 }, nodeOptions);

  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    const value = `Bearer ${options.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", value);
      return next(req);
    });
  }
  interceptors.push(...(options.interceptors ?? []));

  const transport = createGrpcTransport({ baseUrl, sessionManager, interceptors });
  const gateway = createConnectClient(Gateway, transport);
  const translators = createConnectClient(Translators, transport);
  const subscriptions = createConnectClient(Subscriptions, transport);

  async function uploadTranslator(name: string, bytes: Uint8Array): Promise<TranslatorVersion> {
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    async function* parts(): AsyncGenerator<UploadTranslatorRequest> {
      yield create(UploadTranslatorRequestSchema, {
        part: { case: "header", value: { name, size: BigInt(bytes.length), sha256 } },
      });
      for (let at = 0; at < bytes.length; at += CHUNK_BYTES) {
        yield create(UploadTranslatorRequestSchema, { part: { case: "chunk", value: bytes.subarray(at, at + CHUNK_BYTES) } });
      }
    }
    try {
      return await translators.upload(parts());
    } catch (err) {
      throw toTributaryError(err);
    }
  }

  return {
    gateway,
    translators,
    subscriptions,
    uploadTranslator,
    close: () => sessionManager.abort(),
  };
}
