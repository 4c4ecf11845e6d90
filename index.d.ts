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
  /** With an `on('*')` handler, consume every topic (default false). */
  forceListening?: boolean
  publishPrefix?: string
  subscribePrefix?: string
}

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
  /** Shared-subscription group: several instances split the messages. */
  sharedGroup?: string
  /** Base topic of dead letters (default `dead-letter/<clientId>`); a dead letter goes to `<deadLetterTopic>/<topic>`. */
  deadLetterTopic?: string
  /** How long an emit waits for its confirmation (default 30000). */
  publishTimeout?: number
  /** First reconnect delay (default 250); doubles up to maxReconnectDelay (default 10000). */
  reconnectDelay?: number
  maxReconnectDelay?: number
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
  queue?: string | { name?: string; provision?: boolean; type?: 'classic' | 'quorum' | string; deadLetterExchange?: string; deadLetterRoutingKey?: string }
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
}

/** A message that exhausted its attempts (kept in memory by the local kind). */
export interface DeadLetter {
  topic: string
  payload: string
  attempts: number
  error: string
}

/** Base class of every native kind. */
export declare class NativeMessagingService extends cds.MessagingService {
  /** Starts consuming; called at `cds.once('listening')` (call it yourself in a script without a server). */
  startListening(): Promise<void>
  /** Dead letters kept in memory (local kind), oldest first. */
  deadLetters(): DeadLetter[]
  /** Stops consuming and releases every native resource; idempotent. */
  disconnect(): Promise<void>
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
