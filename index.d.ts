// Public types of cds-native-messaging. (The napi-generated declarations of the native addon are
// in native/native.d.ts; they are internal.)
import type cds from '@sap/cds'

/** Stable error codes. */
export type NativeMessagingErrorCode =
  | 'INVALID_CONFIG'
  | 'CONNECTION_FAILED'
  | 'NO_ROUTE'
  | 'INVALID_DATA_FORMAT'
  | 'HANDLER_FAILED'
  | 'LOCK_TIMEOUT'
  | 'CLOSED'
  | 'IO_ERROR'
  | 'REJECTED'
  | 'TOKEN_FAILED'
  | 'INTERNAL'

export declare const codes: { readonly [K in NativeMessagingErrorCode]: K }

/** Every error this package throws or rejects with. */
export declare class NativeMessagingError extends Error {
  constructor(code: NativeMessagingErrorCode, message: string, options?: { cause?: unknown })
  readonly code: NativeMessagingErrorCode
}

/** Options of every native kind (`cds.requires.<service>`). Durations in milliseconds. */
export interface NativeMessagingOptions {
  kind: string
  /** Deliveries in total before a message is dead-lettered (default 3; 1 = no redelivery). */
  maxAttempts?: number
  /** Delay before the first redelivery (default 200); doubles per attempt with ±20 % jitter. */
  retryDelay?: number
  /** Upper bound of the redelivery delay (default 30000). */
  maxRetryDelay?: number
  /** Deliveries processed at once (default 100). */
  maxInFlight?: number
  /** Deliveries handed to JavaScript in one call (default 100). */
  maxBatch?: number
  /** A message whose handlers have not settled within this many ms counts as failed (redelivered, then dead-lettered); default: no limit. */
  handlerTimeout?: number
  /** With an `on('*')` handler, consume every topic (default false). */
  forceListening?: boolean
  publishPrefix?: string
  subscribePrefix?: string
  /** `'cloudevents'`: outbound headers are completed to a CloudEvents 1.0 event and validated (`INVALID_DATA_FORMAT` otherwise). */
  format?: 'cloudevents'
  /** A string `data` is sent as `{ message: data }`, as @sap/cds's `structured: true`. */
  structured?: boolean
}

/** Options of `native-local-messaging` (the common options only). */
export interface NativeLocalMessagingOptions extends NativeMessagingOptions {}

/** Options of `native-composite-messaging`. */
export interface NativeCompositeMessagingOptions {
  kind: string
  /** `{ <cds.requires name>: [glob, …] }`; `**`, `*`, `?` as in CAP, anchored, other characters literal. */
  routes: { [service: string]: string | Array<string | { event: string }> }
  /** Topics no route matches: `'error'` (default: the emit fails with `NO_ROUTE`), `'drop'`, or a service name. */
  unmatched?: 'error' | 'drop' | (string & {})
}

/** What `onFailure` decides for a message: drop it as handled, give up now, or the default policy. */
export type FailureDecision = 'ack' | 'dead-letter' | 'retry' | undefined | void

/** The delivery of a failed message. */
export interface FailureInfo {
  /** This delivery's attempt (1 = first). */
  attempt: number
  /** The effective `maxAttempts`. */
  maxAttempts: number
}

/** The hook of {@link NativeMessagingService.onFailure}. */
export type FailureHook = (
  err: Error & { code?: string; unrecoverable?: boolean },
  msg: { event: string; data: unknown; headers: Record<string, unknown>; inbound?: boolean },
  info: FailureInfo
) => FailureDecision | Promise<FailureDecision>

/** Options of `native-file-based-messaging`. */
export interface NativeFileBasedMessagingOptions extends NativeMessagingOptions {
  /** The box file (default `~/.cds-msg-box`). */
  file?: string
  /** Dead-letter box (default `<file>.dead`). */
  deadLetterFile?: string
  /** Where malformed lines go (default `<file>.malformed`). */
  malformedFile?: string
  /** React to file-change notifications (default true). */
  watch?: boolean
  /** Longest time between two reads of the box (default 1000). */
  interval?: number
  /** How long to wait for the box lock (default 5000). */
  lockTimeout?: number
  /** Age after which a lock of unknown origin is stale (default 10000). */
  staleLockAfter?: number
  /** Flush to disk before an emit resolves (default true). */
  fsync?: boolean
}

/** Options of `native-mqtt-messaging`. */
export interface NativeMqttMessagingOptions extends NativeMessagingOptions {
  /** Broker URL: mqtt://, mqtts://, ws://, wss:// (default mqtt://localhost:1883; also credentials.url / credentials.uri). */
  url?: string
  username?: string
  password?: string
  /** Queue name (string or { name }); default `<app name>/<service name>`. Names the persistent session. */
  queue?: string | { name: string }
  /** MQTT client id of the consumer session (default: the queue name, other characters than [A-Za-z0-9_.-] replaced by '-'). */
  clientId?: string
  /** Keep-alive in ms (default 30000; sent in whole seconds). */
  keepAlive?: number
  /** 0 or 1 (default 1). */
  qos?: 0 | 1
  /** `'.'` (default): event names are topics; `'/'`: dots become topic levels. */
  topicSeparator?: '.' | '/'
  /** WebSocket path (default: the URL's, else /mqtt). */
  path?: string
  /** PEM text or path of the CA certificates to trust (mqtts://, wss://). */
  ca?: string
  /** Verify the broker's TLS certificate (default true). */
  rejectUnauthorized?: boolean
  /** PEM client certificate and key (mutual TLS). */
  cert?: string
  key?: string
  /** OAuth bearer token for the WebSocket upgrade (ws://, wss://). */
  token?: string
  /** OAuth2 client credentials for the WebSocket upgrade (ws://, wss://): a fresh token on every (re)connect. Default: the Event Mesh entry's `oa2`. */
  oauth?: OAuth2Credentials
  /** Shared-subscription group: several instances split the messages. */
  sharedGroup?: string
  /** Base topic of dead letters (default `dead-letter/<clientId>`); a dead letter goes to `<deadLetterTopic>/<topic>/<id>` (`<id>`: `<ms since the epoch>-<random>`). */
  deadLetterTopic?: string
  /** Publish dead letters retained, so the broker keeps each until `cds-native-messaging dead-letters` redelivers or purges it (default `true`; turn off for brokers without retained messages). */
  deadLetterRetain?: boolean
  /** Subscribe to Mosquitto's `$SYS/broker/publish/messages/dropped` and log an error whenever the broker dropped messages because of its queue limits (default `true`, `false` with an SAP Event Mesh binding). */
  watchBrokerDrops?: boolean
  /** How long an emit waits for its confirmation (default 30000). */
  publishTimeout?: number
  /** First reconnect delay (default 250); doubles up to maxReconnectDelay (default 10000). */
  reconnectDelay?: number
  maxReconnectDelay?: number
  /** A service binding: `url`/`uri`, `username`/`user`, `password` (cds masks `password` in its logs), `ca`, `cert`, `key`, `token`, or SAP Event Mesh's `messaging` list. */
  credentials?: {
    url?: string
    uri?: string
    username?: string
    user?: string
    password?: string
    ca?: string
    cert?: string
    key?: string
    token?: string
    messaging?: Array<{ protocol?: string | string[]; uri?: string; token?: string; oa2?: { token?: string } }>
  }
}

/** Options of `native-amqp-messaging`. Durations in milliseconds. */
export interface NativeAmqpMessagingOptions extends NativeMessagingOptions {
  /** `amqp[s]://[user:password@]host[:port][/vhost]` (or `credentials.url`). */
  url?: string
  /** Broker profile (default `rabbitmq`, i.e. RabbitMQ 3.x addresses). */
  profile?: 'rabbitmq' | 'rabbitmq4' | 'event-mesh' | 'message-queuing' | 'activemq' | 'artemis' | 'solace' | 'azure-service-bus' | 'eventter' | 'generic'
  /** Secrets belong here: `user`, `password` (cds masks them in its logs), or `url`, `vhost`, `namespace`. */
  credentials?: { url?: string; uri?: string; user?: string; password?: string; vhost?: string; namespace?: string }
  user?: string
  password?: string
  vhost?: string
  /** SASL mechanism (default PLAIN with a user, else ANONYMOUS). */
  sasl?: 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL' | { mechanism: 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL' }
  /** TLS for `amqps://`: PEM text or file paths; verification is on unless `rejectUnauthorized: false`. */
  tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean; servername?: string }
  connection?: {
    /** A connection of its own instead of the one shared by the services of this binding. */
    dedicated?: boolean
    containerId?: string
    /** Default 60000; 0 = none. */
    idleTimeout?: number
    /** Default 10000. */
    connectTimeout?: number
    /** First reconnect delay (default 200), doubled per failure with jitter. */
    reconnectDelay?: number
    /** Default 30000. */
    maxReconnectDelay?: number
  }
  /** The consuming queue (default name derived from the app, like @sap/cds's `$appId`). */
  queue?: string | { name?: string; provision?: boolean; type?: 'classic' | 'quorum' | string; deadLetterExchange?: string; deadLetterRoutingKey?: string; deadLetterQueue?: string }
  /** Link credit of the receiver (default 2 × maxInFlight). */
  prefetch?: number
  /** 0 = send settled (at-most-once); 1 = wait for the broker's outcome (default). */
  qos?: 0 | 1
  /** How long an emit may wait for the broker across reconnects (default 30000). */
  sendTimeout?: number
  /** Mark messages durable (default true). */
  durable?: boolean
  /** Exchange of the rabbitmq profiles (default `amq.topic`). */
  exchange?: string
  /** Namespace of the eventter profile. */
  namespace?: string
  /** Address templates of the generic profile. */
  addresses?: { publish: string; consume: string; anonymous?: boolean; topicFrom?: 'to' | 'subject' | 'routing-key'; retry?: 'released' | 'modified' | 'rejected'; deadLetter?: 'released' | 'modified' | 'rejected' }
  /** OAuth2 client credentials for a `ws://`/`wss://` gateway (default `credentials.oa2`): a bearer token on every (re)connect. */
  oauth?: OAuth2Credentials
}

/** OAuth2 client credentials as in an SAP Event Mesh binding's `oa2` (either spelling). */
export interface OAuth2Credentials {
  clientid?: string
  client?: string
  clientsecret?: string
  secret?: string
  tokenendpoint?: string
  endpoint?: string
  granttype?: string
}

/** An SAP Event Mesh service binding (`credentials`), as `cds bind` / VCAP_SERVICES provide it. */
export interface EventMeshCredentials {
  namespace?: string
  messaging?: Array<{ protocol?: string | string[]; broker?: { type?: string }; uri?: string; oa2?: OAuth2Credentials }>
  management?: Array<{ uri?: string; oa2?: OAuth2Credentials }>
  /** Mutual TLS: the token comes from `certurl + /oauth/token` with this certificate. */
  uaa?: { certificate?: string; key?: string; certurl?: string }
  serviceinstanceid?: string
}

/** The queue of an Event Mesh kind: `name` (default `$namespace/$appId`), every other key is the queue configuration sent when it is created. */
export type EventMeshQueue = string | ({ name?: string; deadMsgQueue?: string; maxQueueSizeInBytes?: number; maxMessageSizeInBytes?: number; respectTtl?: boolean; maxRedeliveryCount?: number } & { [config: string]: unknown })

/** Options of `native-enterprise-messaging-shared` / `native-event-mesh-shared` (AMQP 1.0 over WebSocket). */
export interface NativeEnterpriseMessagingSharedOptions extends Omit<NativeAmqpMessagingOptions, 'url' | 'credentials' | 'queue' | 'oauth'> {
  credentials?: EventMeshCredentials
  queue?: EventMeshQueue
  /** Base path of the management API (default `/hub/rest/api/v1/management/messaging`; `/sap-event-mesh/rest/api/v1` for native-event-mesh-shared). */
  managementBasePath?: string
  /** Multitenancy only: `false` gives the provider no queue (subscriptions, webhook) at startup; only subscriber tenants get them, on their subscribe (default true). */
  deployForProvider?: boolean
}

/** Options of `native-enterprise-messaging` / `native-event-mesh` (HTTP REST, inbound by webhook or pull). */
export interface NativeEnterpriseMessagingOptions extends NativeMessagingOptions {
  credentials?: EventMeshCredentials
  queue?: EventMeshQueue
  /** Base path of the management API. */
  managementBasePath?: string
  /** `x-qos` of publishes (default 1). */
  qos?: 0 | 1
  /** Bound of one HTTP request (default 30000). */
  requestTimeout?: number
  /** Webhook registration (as @sap/cds), or `false` for pull mode. */
  webhook?: false | ({ waitingPeriod?: number } & { [option: string]: unknown })
  /** `'webhook'` (default) or `'pull'` (consume the queue; no public URL needed). */
  inbound?: 'webhook' | 'pull'
  /** Pull mode: pause after the queue was found empty (default 1000). */
  pull?: { interval?: number }
  /** Retries of one management call on 429/5xx/network errors (default 10). */
  maxRetries?: number
  /** Multitenancy only: `false` gives the provider no queue (subscriptions, webhook) at startup; only subscriber tenants get them, on their subscribe (default true). */
  deployForProvider?: boolean
}

/** A message that exhausted its attempts (kept in memory by the local kind). */
export interface DeadLetter {
  topic: string
  payload: string
  attempts: number
  error: string
}

/** Counters of one messaging service (`srv.stats()`). */
export interface MessagingStats {
  emitted: number
  emitFailures: number
  /** Hand-overs to the handlers, redeliveries included. */
  delivered: number
  acked: number
  redelivered: number
  deadLettered: number
  inFlight: number
  /** Connections re-established after a loss. */
  reconnects: number
  /** The last error; `at` in ms since the epoch. */
  lastError?: { kind: string; message: string; at: number }
}

/** One inbound message as a batch handler sees it (see {@link NativeMessagingService.onBatch}). */
export interface BatchMessage<T = any> {
  /** The event name given to `onBatch` (prefixes removed). */
  event: string
  data: T
  headers: Record<string, any>
  inbound: true
}

/**
 * A batch handler: the messages of one event from one delivery batch, in delivery order, handled in
 * one CAP transaction (`cds.context.tx`; `this` is the service's transaction object).
 */
export type BatchHandler<T = any> = (this: cds.MessagingService, msgs: Array<BatchMessage<T>>) => any

/** One message of {@link NativeMessagingService.emitMany}. */
export interface OutboundMessage<T = any> {
  event: string
  data?: T
  headers?: Record<string, any>
}

/** The result of {@link NativeMessagingService.emitMany} for one message (`Promise.allSettled`'s shape). */
export type EmitResult = PromiseSettledResult<void>

/** Base class of every native kind. */
export declare class NativeMessagingService extends cds.MessagingService {
  /**
   * Opt-in batched inbound processing: `handler(msgs)` receives the messages of `event` that one
   * delivery batch (up to `maxBatch`) holds, and runs in one CAP transaction for all of them. When it
   * throws, the transaction is rolled back and every message of the batch is processed alone
   * (`handler([msg])`, its own transaction, delivery order): only a message that fails alone is
   * redelivered or dead-lettered; each is acknowledged after its own success. Redeliveries, and every
   * message of an event that also has plain `on`/`before`/`after` handlers (or `'*'`), go one by one.
   */
  onBatch<T = any>(event: string | string[], handler: BatchHandler<T>): this
  /**
   * Bulk emit: all messages go to the engine in one publish call. Resolves (never rejects for a
   * message's failure) with one result per message, in order; rejects with `INVALID_CONFIG` when
   * `messages` is not an array. With `outboxed: true` each message goes through `emit` into the outbox.
   */
  emitMany<T = any>(messages: Array<OutboundMessage<T>>): Promise<EmitResult[]>
  /** Starts consuming; called at `cds.once('listening')` (call it yourself in a script without a server). */
  startListening(): Promise<void>
  /** Dead letters kept in memory (local kind), oldest first. */
  deadLetters(): DeadLetter[]
  /** The engine's counters (always on). */
  stats(): MessagingStats
  /** Stops consuming and releases every native resource; idempotent. */
  disconnect(): Promise<void>
  /**
   * The application's error hook, called when handlers fail or a message cannot be parsed
   * (`err.code === 'INVALID_DATA_FORMAT'`); returns `'ack'`, `'dead-letter'`, or `'retry'` / nothing.
   */
  onFailure(hook: FailureHook): this
}

/** `native-local-messaging`. */
export declare class NativeLocalMessaging extends NativeMessagingService {}

/** `native-file-based-messaging`. */
export declare class NativeFileBasedMessaging extends NativeMessagingService {}

/** Options of `native-redis-messaging`. */
export interface NativeRedisMessagingOptions extends NativeMessagingOptions {
  /** `pubsub` (default; wire-compatible with @sap/cds `redis-messaging`, at-most-once) or `streams` (at-least-once). */
  mode?: 'pubsub' | 'streams'
  /** `uri` (`redis://`, `rediss://`; the user name is dropped as by @sap/cds), or `hostname`/`port`/`password`/`tls`; `tls.server_ca` is the CA to trust. */
  credentials?: { uri?: string; url?: string; hostname?: string; host?: string; port?: number; password?: string; tls?: boolean | { server_ca?: string } }
  /** Redis URL used as given (when there is no `credentials.uri`). */
  url?: string
  /** PEM CA certificate to trust for `rediss://`. */
  ca?: string
  /** Limit of one connection attempt and how long an emit waits for a lost connection (default 5000). */
  connectTimeout?: number
  /** First reconnect delay (default 100); doubles per attempt, jittered. */
  reconnectDelay?: number
  /** Upper bound of the reconnect delay (default 5000). */
  maxReconnectDelay?: number
  /** Streams: prefix of the stream keys (default `cds:`). */
  streamPrefix?: string
  /** Streams: the consumer group (default `$appId`). */
  queue?: string | { name: string }
  /** Streams: this consumer's name in the group (default `<host>-<pid>-<n>`). */
  consumer?: string
  /** Streams: `XADD … MAXLEN ~ maxLen` (default: no trimming). */
  maxLen?: number
  /** Streams: idle time after which pending messages of another consumer are taken over (default 30000). */
  claimAfter?: number
  /** Streams: entries per `XREADGROUP` (default 100). */
  readCount?: number
  /** Streams: `BLOCK` time of one `XREADGROUP` (default 1000). */
  block?: number
  /** Streams: where exhausted messages go (default `<streamPrefix><queue>:dead-letter`). */
  deadLetterStream?: string
  /** Streams: a new consumer group starts at the first entry of an existing stream (default false: at its end). */
  fromStart?: boolean
}

/** `native-redis-messaging`. */
export declare class NativeRedisMessaging extends NativeMessagingService {}
/** `native-mqtt-messaging`. */
export declare class NativeMqttMessaging extends NativeMessagingService {}
/** `native-amqp-messaging`. */
export declare class NativeAmqpMessaging extends NativeMessagingService {}

/** `native-enterprise-messaging-shared` / `native-event-mesh-shared`: SAP Event Mesh over AMQP 1.0 on WebSocket. */
export declare class NativeEnterpriseMessagingShared extends NativeAmqpMessaging {}

/** `native-enterprise-messaging` / `native-event-mesh`: SAP Event Mesh over HTTP REST. */
export declare class NativeEnterpriseMessaging extends NativeAmqpMessaging {}

/** `native-composite-messaging`: routes each topic to the child services whose patterns match it. */
export declare class NativeCompositeMessaging extends cds.MessagingService {
  /** The routing table as configured. */
  routes(): Array<{ service: string; patterns: string[] }>
  /** The child services a topic goes to (throws `NO_ROUTE` when none matches and unmatched is 'error'). */
  route(topic: string): string[]
  /** `onBatch` on every child the event routes to (each child batches its own deliveries). */
  onBatch<T = any>(event: string | string[], handler: BatchHandler<T>): this
  /** Each message through `emit` (routed); one result per message. */
  emitMany<T = any>(messages: Array<OutboundMessage<T>>): Promise<EmitResult[]>
}
