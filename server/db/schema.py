"""The database schema, as SQLAlchemy Core tables (no ORM): one code path for SQLite and PostgreSQL.

Conventions: times are integer milliseconds since the epoch (``*_ms``, like the wire contract);
sequence numbers are 64-bit; signed messages are stored as their exact received bytes
(``LargeBinary``) and never re-serialized; nothing that is evidence is ever updated in place
except state columns that move forward (an entry's state, a finding's ``closed_ms``). Later
parts of the system add tables and columns through Alembic migrations in
``server/migrations/versions``; a test checks the migrations build exactly this schema.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Deterministic constraint names, so migrations on SQLite and PostgreSQL name things alike.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

Ms = sa.BigInteger
Seq = sa.BigInteger

# -- units (server/services/units.py) --------------------------------------------------------------

units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # bureau | section | team
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True),
    # "/bureau/section/team/": a subtree is a prefix, so scope checks are one LIKE.
    sa.Column("path", sa.String(1000), nullable=False, unique=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("disabled_ms", Ms, nullable=True),
    # Home unit, and the root of a wider scope granted to this user (server/services/units.py);
    # a user with neither acts agency-wide.
    sa.Column("unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True),
    sa.Column("scope_unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    # The public id (shown in lists, used to revoke); the secret itself is only stored hashed.
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("expires_ms", Ms, nullable=True),
    sa.Column("revoked_ms", Ms, nullable=True),
    sa.Column("last_used_ms", Ms, nullable=True),
)

server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("retired_ms", Ms, nullable=True),
)

officers = sa.Table(
    "officers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("unit", sa.String(200), nullable=False),
    sa.Column("unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True, index=True),
    sa.Column("cert_number", sa.String(64), nullable=False, unique=True),
    sa.Column("cert_expires_ms", Ms, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
)

enrollment_tokens = sa.Table(
    "enrollment_tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("expires_ms", Ms, nullable=False),
    sa.Column("note", sa.String(200), nullable=True),
    # The server key the token pins: the enrollment answer is signed by exactly this key.
    sa.Column("server_key_id", sa.String(16), nullable=False),
    sa.Column("used_ms", Ms, nullable=True),
    sa.Column("device_id", sa.String(24), nullable=True),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("serial", sa.String(64), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("firmware", sa.String(64), nullable=False),
    # The key the device signs requests with now; every key it ever held is in device_keys.
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("enrolled_ms", Ms, nullable=False),
    sa.Column("enrollment_token_id", sa.String(16), sa.ForeignKey("enrollment_tokens.id"), nullable=True),
    sa.Column("certificate", sa.LargeBinary, nullable=False),
    sa.Column("last_seen_ms", Ms, nullable=True),
    # Highest sequence number known from entries or from the device's signed status (the last seq it
    # committed); gaps below it are findings.
    sa.Column("highest_seq", Seq, nullable=True),
    # Highest sequence number with a receipt: the cutoff a state change records.
    sa.Column("receipted_seq", Seq, nullable=True),
    sa.Column("unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True, index=True),
)

device_keys = sa.Table(
    "device_keys",
    metadata,
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("retired_ms", Ms, nullable=True),
    # Entries signed by a retired key above this sequence are stored but untrusted.
    sa.Column("retired_after_seq", Seq, nullable=True),
    # The KeyRotation envelope (signed by the previous key) that introduced this key; null at enrollment.
    sa.Column("rotation", sa.LargeBinary, nullable=True),
)

device_states = sa.Table(
    "device_states",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    # Last receipted sequence at the change: trust of an entry is decided by its seq against this.
    sa.Column("cutoff_seq", Seq, nullable=True),
    sa.Column("changed_ms", Ms, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("officer_id", sa.String(64), sa.ForeignKey("officers.id"), nullable=False, index=True),
    sa.Column("from_ms", Ms, nullable=False),
    sa.Column("until_ms", Ms, nullable=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Index(None, "device_id", "from_ms"),
)

request_nonces = sa.Table(
    "request_nonces",
    metadata,
    # The primary key is the replay check: a second insert of the same nonce fails in any process.
    sa.Column("device_id", sa.String(24), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("seen_ms", Ms, nullable=False, index=True),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("seq", Seq, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),  # chunk | event
    sa.Column("payload_type", sa.String(64), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),  # exact bytes as received
    sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prev", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("recording_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=True),  # start | stop | interrupted for events
    sa.Column("officer_id", sa.String(64), nullable=True, index=True),
    sa.Column("case_step", sa.String(64), nullable=True, index=True),
    sa.Column("time_ms", Ms, nullable=False),  # device clock: chunk start or event time
    sa.Column("duration_ms", sa.Integer, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # protocol.states.ChunkState
    sa.Column("trusted", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(8), nullable=False),  # http | mqtt
    sa.Column("received_ms", Ms, nullable=False),
    sa.Column("object_key", sa.String(256), nullable=True),
    sa.Column("uploaded_ms", Ms, nullable=True),
    sa.Column("verified_ms", Ms, nullable=True),
    sa.Column("stored_sha256", sa.String(64), nullable=True),
    sa.Column("receipt", sa.LargeBinary, nullable=True),  # signed Receipt envelope
    sa.Column("verification", sa.JSON, nullable=True),  # the numbered steps of the last verification
    sa.Column("decode", sa.String(16), nullable=True),  # first-keyframe decode: ok | failed
    sa.Index(None, "device_id", "recording_id"),
    # The fork check at every announce looks for another entry with the same predecessor: without
    # this it read all of the device's entries, a cost growing with the device's age.
    sa.Index(None, "device_id", "prev"),
    sa.Index(None, "state", "received_ms"),
    sa.Index(None, "time_ms"),
)

conflicts = sa.Table(
    "conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("seq", Seq, nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("received_ms", Ms, nullable=False),
    # Where the conflicting body is kept aside once the device hands it over (never the original's key).
    sa.Column("evidence_key", sa.String(256), nullable=True),
    sa.Column("evidence_stored_ms", Ms, nullable=True),
    sa.Index(None, "device_id", "seq"),
)

findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(64), nullable=False),  # protocol.findings registry
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("device_id", sa.String(24), nullable=True),
    sa.Column("seq", Seq, nullable=True),
    # Makes recording the same fact twice a no-op (e.g. "gap:DEVICE:5-9").
    sa.Column("dedup_key", sa.String(200), nullable=True, unique=True),
    sa.Column("message", sa.String(1000), nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("opened_ms", Ms, nullable=False),
    sa.Column("closed_ms", Ms, nullable=True),
    sa.Column("closed_reason", sa.String(200), nullable=True),
    sa.Index(None, "device_id", "code", "closed_ms"),
    sa.Index(None, "code", "opened_ms"),
)

# -- second copies of footage (server/services/replication.py) ---------------------------------------

replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Where the copy is: a directory or s3://BUCKET, as configured in replication.to.
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("device_id", sa.String(24), nullable=False),
    sa.Column("seq", Seq, nullable=False),
    sa.Column("object_key", sa.String(256), nullable=False),
    # What the copy was read back and checked against: the entry's sha256 and size.
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("verified_ms", Ms, nullable=False),
    sa.UniqueConstraint("target", "object_key"),
    sa.Index(None, "target", "device_id", "seq"),
)

# -- cases, steps, the recording-requirement list, links (server/services/cases.py) ------------

recording_policies = sa.Table(
    "recording_policies",
    metadata,
    # Every version of the requirement list ever loaded; the highest id is in force.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(64), nullable=False, unique=True),
    sa.Column("text", sa.Text, nullable=False),  # exactly as loaded, comments (the citations) included
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("loaded_ms", Ms, nullable=False),
    sa.Column("loaded_by", sa.String(64), nullable=False),
)

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("number", sa.String(100), nullable=False, unique=True),  # 案号, e.g. 长执罚〔2026〕12号
    sa.Column("category", sa.String(16), nullable=False),  # server.services.policy.CATEGORIES
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("parties", sa.JSON, nullable=False),  # list of names (当事人)
    sa.Column("handler", sa.String(64), nullable=False, index=True),  # user name of the case handler
    sa.Column("major", sa.Boolean, nullable=False),  # 重大执法决定: the decision needs legal review
    sa.Column("unit", sa.String(200), nullable=True),
    sa.Column("unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True, index=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
)

case_steps = sa.Table(
    "case_steps",
    metadata,
    # A protocol identifier: devices carry it in manifests (case_step), so it is chosen, not numbered.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("activity", sa.String(32), nullable=False),
    sa.Column("title", sa.String(200), nullable=True),
    sa.Column("officers", sa.JSON, nullable=False),  # officer ids
    sa.Column("planned_start_ms", Ms, nullable=True),
    sa.Column("planned_end_ms", Ms, nullable=True),
    sa.Column("actual_start_ms", Ms, nullable=True),
    sa.Column("actual_end_ms", Ms, nullable=True),
    sa.Column("location", sa.String(200), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # planned | in_progress | completed | cancelled
    # What the requirement list in force said when the step got its activity, and which version said it.
    sa.Column("requirement", sa.String(8), nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
)

step_links = sa.Table(
    "step_links",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("step_id", sa.String(64), sa.ForeignKey("case_steps.id"), nullable=False, index=True),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("recording_id", sa.String(64), nullable=False),
    # The linked part of the recording (device clock, ms); null: the whole recording.
    sa.Column("from_ms", Ms, nullable=True),
    sa.Column("until_ms", Ms, nullable=True),
    sa.Column("source", sa.String(8), nullable=False),  # auto (the manifests carry the step) | manual
    # Auto links are made once per (step, recording): an unlinked auto link is never silently remade.
    sa.Column("auto_key", sa.String(200), nullable=True, unique=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    # A link is never deleted: unlinking records when, who and why (the only update a link gets).
    sa.Column("removed_ms", Ms, nullable=True),
    sa.Column("removed_by", sa.String(64), nullable=True),
    sa.Column("removed_reason", sa.String(500), nullable=True),
    sa.Index(None, "device_id", "recording_id"),
)

link_events = sa.Table(
    "link_events",
    metadata,
    # Append-only: one row per link or unlink, never updated except log_index, which the
    # transparency log sets once when it has appended the event (CasesService.link_event_hooks).
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link_id", sa.Integer, sa.ForeignKey("step_links.id"), nullable=False, index=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # link | unlink
    sa.Column("device_id", sa.String(24), nullable=False),
    sa.Column("recording_id", sa.String(64), nullable=False),
    sa.Column("from_ms", Ms, nullable=True),
    sa.Column("until_ms", Ms, nullable=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("time_ms", Ms, nullable=False),
    sa.Column("log_index", sa.BigInteger, nullable=True),
)

review_signoffs = sa.Table(
    "review_signoffs",
    metadata,
    # 重大执法决定法制审核: a legal reviewer's sign-off of a major case's decision step.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), sa.ForeignKey("case_steps.id"), nullable=False, index=True),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("opinion", sa.String(2000), nullable=False),
    # Set when the reviewer signed off although the audit showed footage problems (review.override).
    sa.Column("override_reason", sa.String(2000), nullable=True),
    sa.Column("blocking", sa.JSON, nullable=False),  # the footage findings the reviewer saw
    sa.Column("created_ms", Ms, nullable=False),
)

# -- MQTT control plane and fleet view (server/mqtt, server/services/fleet.py, commands.py) ----------

device_broker_credentials = sa.Table(
    "device_broker_credentials",
    metadata,
    # MQTT user name = device id. The password is random, issued in the enrollment answer, and kept
    # only as a Mosquitto-compatible PBKDF2-SHA512 hash ("$7$...") so a password file can be built.
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("issued_ms", Ms, nullable=False),
)

device_health = sa.Table(
    "device_health",
    metadata,
    # Telemetry, not evidence: one row per device, overwritten by each newer status (the signed
    # status bytes of the latest one are kept so what the device claimed can be shown).
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("online", sa.Boolean, nullable=True),
    sa.Column("availability_ms", Ms, nullable=True),  # server time of the last online/offline change
    sa.Column("last_seen_ms", Ms, nullable=True),  # server time anything live was heard from the device
    sa.Column("status_received_ms", Ms, nullable=True),
    sa.Column("status_time_ms", Ms, nullable=True),  # device clock of the latest status
    sa.Column("clock_skew_ms", Ms, nullable=True),  # server receive time minus device time_ms
    sa.Column("state", sa.String(16), nullable=True),  # recording state: idle | armed | recording
    sa.Column("recording_id", sa.String(64), nullable=True),
    sa.Column("officer_id", sa.String(64), nullable=True),
    sa.Column("case_step", sa.String(64), nullable=True),
    sa.Column("battery_pct", sa.Integer, nullable=True),
    sa.Column("storage_free", sa.BigInteger, nullable=True),
    sa.Column("buffered_chunks", sa.BigInteger, nullable=True),
    sa.Column("buffered_bytes", sa.BigInteger, nullable=True),
    sa.Column("firmware", sa.String(64), nullable=True),
    sa.Column("config_version", sa.String(64), nullable=True),
    sa.Column("reported_seq", Seq, nullable=True),  # last committed seq the device signed
    sa.Column("reported_head", sa.String(64), nullable=True),
    sa.Column("checkpoint", sa.JSON, nullable=True),  # latest tree head the device saw
    sa.Column("alarms", sa.JSON, nullable=True),
    sa.Column("status", sa.LargeBinary, nullable=True),  # the latest signed DeviceStatus envelope
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # protocol.messages.CommandKind
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("issued_ms", Ms, nullable=False),
    sa.Column("expires_ms", Ms, nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False, unique=True),
    sa.Column("envelope", sa.LargeBinary, nullable=False),  # the signed Command, exactly as sent
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("published_ms", Ms, nullable=True),  # last time it went out on the broker
    sa.Column("publish_count", sa.Integer, nullable=False),
    sa.Column("ack_status", sa.String(16), nullable=True),  # ok | refused | unsupported | failed
    sa.Column("ack_reason", sa.String(300), nullable=True),
    sa.Column("ack_result", sa.JSON, nullable=True),
    sa.Column("ack_time_ms", Ms, nullable=True),  # device clock
    sa.Column("ack_received_ms", Ms, nullable=True),
    sa.Column("ack", sa.LargeBinary, nullable=True),  # the signed CommandAck envelope
    sa.Index(None, "device_id", "issued_ms"),
)


# -- transparency log, witnesses, access log, scrubber (issue 7) ----------------------------------
# Appended as one block so parallel branches adding tables merge cleanly.

log_state = sa.Table(
    "log_state",
    metadata,
    # One row (id 1). Appenders lock it (SELECT ... FOR UPDATE on PostgreSQL; SQLite has one writer),
    # which makes the database the log's single sequencer however many server processes run.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
)

log_leaves = sa.Table(
    "log_leaves",
    metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),  # protocol.leaves kinds
    # What the leaf is about ("entry:DEVICE:SEQ", "access:17", ...): unique, so nothing is logged twice.
    sa.Column("subject", sa.String(160), nullable=False, unique=True),
    sa.Column("leaf", sa.LargeBinary, nullable=False),  # canonical JSON, exactly what is hashed
    sa.Column("leaf_hash", sa.String(64), nullable=False, index=True),
    sa.Column("created_ms", Ms, nullable=False),
)

log_nodes = sa.Table(
    "log_nodes",
    metadata,
    # One hash per perfect subtree of 2**level leaves starting at leaf idx << level (level 0: leaf hashes):
    # about two rows per leaf, and any root or proof costs O(log^2 n) reads.
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
)

log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.Text, nullable=False),  # the signed note as the log signed it (no cosignatures)
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
)

log_witnesses = sa.Table(
    "log_witnesses",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("vkey", sa.String(300), nullable=False, unique=True),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("disabled_ms", Ms, nullable=True),
)

log_cosignatures = sa.Table(
    "log_cosignatures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("size", sa.BigInteger, sa.ForeignKey("log_checkpoints.size"), nullable=False),
    sa.Column("witness", sa.String(100), sa.ForeignKey("log_witnesses.name"), nullable=False),
    sa.Column("line", sa.Text, nullable=False),  # the cosignature line exactly as the witness sent it
    sa.Column("timestamp_s", sa.BigInteger, nullable=False),
    sa.Column("received_ms", Ms, nullable=False),
    sa.UniqueConstraint("size", "witness"),
)

access_events = sa.Table(
    "access_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # view | live_view | download | export | integrity
    sa.Column("actor", sa.String(100), nullable=False),  # user:NAME, device:ID or duty:NAME
    sa.Column("principal_id", sa.String(64), nullable=False),  # the opaque id the log leaf carries
    sa.Column("role", sa.String(32), nullable=True),
    sa.Column("device_id", sa.String(24), nullable=True),
    sa.Column("recording_id", sa.String(64), nullable=True),
    sa.Column("case_id", sa.String(64), nullable=True),
    sa.Column("object_keys", sa.JSON, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("log_index", sa.BigInteger, nullable=True),
    sa.Index(None, "actor", "created_ms"),
    sa.Index(None, "device_id", "created_ms"),
    sa.Index(None, "case_id", "created_ms"),
    sa.Index(None, "created_ms"),
)

scrub_state = sa.Table(
    "scrub_state",
    metadata,
    # One row (id 1): where the scrubber is in its pass over verified chunks, in (device, seq) order.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("device_id", sa.String(24), nullable=True),
    sa.Column("seq", Seq, nullable=True),
    sa.Column("passes", sa.Integer, nullable=False),
    sa.Column("bytes_checked", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
)

# Live views (server/live/): one row per viewer of a live session, written when the view starts
# (after its access event) and completed when it ends, so the access log can show how long each
# live view lasted. ``access_id`` names the access-log event that was on record before the first frame.
live_views = sa.Table(
    "live_views",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # viewer id
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(24), sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("access_id", sa.BigInteger, nullable=False),
    sa.Column("started_ms", Ms, nullable=False),
    sa.Column("ended_ms", Ms, nullable=True),
    sa.Column("end_reason", sa.String(64), nullable=True),
    sa.Index(None, "device_id", "started_ms"),
    sa.Index(None, "access_id"),
)


# -- retention, legal hold, expiry (server/retention.py) --------------------------------------------

legal_holds = sa.Table(
    "legal_holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(8), nullable=False),  # case | recording
    # case: the case id; recording: "DEVICE/RECORDING_ID"
    sa.Column("target_id", sa.String(100), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("set_ms", Ms, nullable=False),
    sa.Column("set_by", sa.String(64), nullable=False),
    sa.Column("lifted_ms", Ms, nullable=True),
    sa.Column("lifted_by", sa.String(64), nullable=True),
    sa.Column("lift_reason", sa.String(500), nullable=True),
    sa.Index(None, "target", "target_id"),
)

footage_retention = sa.Table(
    "footage_retention",
    metadata,
    # What the store was last told about an object: retention only grows, so this is a floor.
    sa.Column("object_key", sa.String(300), primary_key=True),
    sa.Column("retain_until_ms", Ms, nullable=True),
    sa.Column("indefinite", sa.Boolean, nullable=False),
    sa.Column("removed_ms", Ms, nullable=True),
    sa.Column("removed_class", sa.String(16), nullable=True),
    # The signed receipt of what was removed, and the transparency log leaf recording the removal.
    sa.Column("removed_receipt", sa.LargeBinary, nullable=True),
    sa.Column("log_index", sa.BigInteger, nullable=True),
    sa.Column("updated_ms", Ms, nullable=False),
)
