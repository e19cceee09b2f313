//! Examples and environment variables shown under each command's `--help`.

/// `clustera dev`.
pub const DEV: &str = "\
Examples:
  clustera dev                              # one broker on 127.0.0.1:9092
  clustera dev --broker-count 3 --listen 127.0.0.1:19092
  clustera dev --control 127.0.0.1:9644     # then `clustera fault` can take brokers down";

/// `clustera produce`.
pub const PRODUCE: &str = "\
Examples:
  seq 10 | clustera produce -b localhost:9092 -t numbers
  clustera produce -t users -K : users.txt  # `id:json` lines: key before the first colon
  clustera produce -t orders --format jsonl orders.jsonl   # {\"key\", \"value\", \"headers\", \"partition\"}
  clustera produce -t orders -X compression.type=zstd orders.txt";

/// `clustera consume`.
pub const CONSUME: &str = "\
Examples:
  clustera consume -b localhost:9092 -t numbers -o beginning -e
  clustera consume -t orders -o -10 -e -f json        # the last 10 of each partition, as JSON
  clustera consume -t orders -f '%p:%o %k=%s\\n'      # kcat's -f format strings
  clustera consume -t orders --group audit            # resume and commit as a group";

/// `clustera lag`.
pub const LAG: &str = "\
Examples:
  clustera lag -b localhost:9092 --group transform-consumer-group
  clustera lag --group transform-consumer-group --topic orders
  clustera lag --group transform-consumer-group --format json | jq .lag";

/// `clustera new`.
pub const NEW: &str = "\
Examples:
  clustera new enrich-orders                 # ./enrich-orders: a kernel crate with tests
  clustera new enrich-orders --path ~/src/enrich-orders";

/// `clustera outbox`.
pub const OUTBOX: &str = "\
Examples:
  export DATABASE_URL=postgres://app@db/app KAFKA_BOOTSTRAP_SERVERS=broker:9092
  clustera outbox init && clustera outbox relay
  clustera outbox resend --since 2026-12-01T00:00:00Z

Environment (relay):
  DATABASE_URL                       PostgreSQL (sslmode, sslrootcert as libpq)
  KAFKA_*                            the broker, as for every kernel
  CLUSTERA_OUTBOX_SCHEMA, _TABLE     the outbox table (activity.event_outbox)
  CLUSTERA_OUTBOX_PUBLICATION, _SLOT publication and slot (clustera_outbox)
  CLUSTERA_OUTBOX_FORMAT             debezium (default) or router, with CLUSTERA_OUTBOX_TOPIC_PREFIX,
                                     _TOPIC, _KEY_COLUMN, _SCHEMAS, _ROUTER_* (README)
  CLUSTERA_OUTBOX_SNAPSHOT           initial (default) or never
  CLUSTERA_OUTBOX_RETENTION_MS       delete relayed rows older than this (unset: keep)
  CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC  rows the format refuses (unset: the relay stops)
  CLUSTERA_RELAY_MAX_IN_FLIGHT, _STATUS_INTERVAL_MS, _HEARTBEAT_MS, _READ
  CLUSTERA_HTTP_ADDR                 /metrics, /healthz, /readyz (default 0.0.0.0:8081)";

/// `clustera portal`.
pub const PORTAL: &str = "\
Examples:
  PORTAL_API_BASE_URL=http://127.0.0.1:8000 PORTAL_ALLOWED_ENDPOINTS='/api/v1/*' clustera portal

Environment:
  KAFKA_REQUEST_TOPIC, KAFKA_RESPONSE_TOPIC   the topics (kafkasend-requests, kafkasend-responses)
  PORTAL_API_BASE_URL, PORTAL_API_CA_CERT     the REST API every request goes to
  PORTAL_ALLOWED_ENDPOINTS                    [METHODS] GLOB[?QUERY NAMES] entries
  PORTAL_ALLOWED_HEADERS, PORTAL_ALLOWED_RESPONSE_HEADERS, PORTAL_STRICT_SECURITY
  PORTAL_ALLOW_NON_ASCII_PATHS, PORTAL_MAX_ENDPOINT_BYTES, PORTAL_REPLY_TOPICS
  PORTAL_JOB_TIMEOUT_SECONDS, PORTAL_JOB_MAX_AGE_SECONDS, PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS,
  PORTAL_JOB_IDLE_TIMEOUT_SECONDS             time limits
  PORTAL_MAX_CONCURRENT_JOBS, PORTAL_MAX_BODY_BYTES, PORTAL_MAX_INFLIGHT_BYTES,
  PORTAL_MIN_CHUNK_BYTES, PORTAL_SPOOL_THRESHOLD_BYTES, PORTAL_SPOOL_DIR   size limits
  OAUTH2_TOKEN_URL, OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET, OAUTH2_SCOPE   the API's token
  KAFKA_*, CLUSTERA_HTTP_ADDR                 the broker and /metrics, as for every kernel
  (the README's KafkaSend section says what each does)";

/// `clustera completions`.
pub const COMPLETIONS: &str = "\
Examples:
  clustera completions bash > ~/.local/share/bash-completion/completions/clustera
  clustera completions zsh > \"${fpath[1]}/_clustera\"
  clustera completions fish > ~/.config/fish/completions/clustera.fish";
