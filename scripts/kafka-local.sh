#!/usr/bin/env bash
# kafka-local.sh - run a real single-node Apache Kafka broker (KRaft, no ZooKeeper,
# no Docker) for tests and the local distributed mode of Tokenpulse.
#
# Usage:
#   scripts/kafka-local.sh fetch                 resolve the Kafka jars via Maven (cached)
#   scripts/kafka-local.sh start [RUNDIR]        start the broker, wait until a produce/consume
#                                                round trip works; last stdout line = bootstrap
#   scripts/kafka-local.sh status [RUNDIR]       print bootstrap if running, else exit 1
#   scripts/kafka-local.sh stop [RUNDIR] [--clean]
#                                                SIGTERM (30 s grace) then SIGKILL; --clean
#                                                also deletes RUNDIR (all topics/data)
#
# Environment:
#   TOKENPULSE_KAFKA_HOME           jar cache root      (default ~/.cache/tokenpulse/kafka; jars in ./libs)
#   TOKENPULSE_KAFKA_RUN            default run dir     (default /tmp/tokenpulse-kafka)
#   TOKENPULSE_KAFKA_VERSION        Kafka version       (default 4.1.1)
#   TOKENPULSE_KAFKA_READY_TIMEOUT  seconds to wait for readiness (default 90)
#   TOKENPULSE_KAFKA_HEAP           broker heap flags   (default "-Xms256m -Xmx512m")
#   TOKENPULSE_MVN_ARGS             extra arguments for mvn (e.g. -Dmaven.repo.local=...)
#   JAVA_HOME                       used if set, else `java` from PATH (Java 17+ required)
#
# Only stdout carries machine-readable output (the bootstrap address); all
# progress and error messages go to stderr.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
POM="$REPO_ROOT/deploy/kafka-local/pom.xml"

KAFKA_VERSION="${TOKENPULSE_KAFKA_VERSION:-4.1.1}"
KAFKA_HOME="${TOKENPULSE_KAFKA_HOME:-$HOME/.cache/tokenpulse/kafka}"
LIBS_DIR="$KAFKA_HOME/libs"
MARKER="$LIBS_DIR/.tokenpulse-complete"
DEFAULT_RUN_DIR="${TOKENPULSE_KAFKA_RUN:-/tmp/tokenpulse-kafka}"
READY_TIMEOUT="${TOKENPULSE_KAFKA_READY_TIMEOUT:-90}"
BROKER_HEAP="${TOKENPULSE_KAFKA_HEAP:--Xms256m -Xmx512m}"
STOP_GRACE=30
READY_TOPIC_PREFIX="_tokenpulse_ready"
READY_GROUP="_tokenpulse_ready"
RUN_MARKER=".tokenpulse-kafka-run"

log() { printf 'kafka-local: %s\n' "$*" >&2; }
die() {
    printf 'kafka-local: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------
# prerequisites

JAVA=""
find_java() {
    [[ -n "$JAVA" ]] && return 0
    if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
        JAVA="${JAVA_HOME}/bin/java"
    elif command -v java >/dev/null 2>&1; then
        JAVA="$(command -v java)"
    else
        die "java not found: install OpenJDK 17 (Debian/Ubuntu: sudo apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
    fi
    local ver major
    ver="$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)" || true
    [[ -n "$ver" ]] || die "could not determine the version of $JAVA (is it a working Java installation?)"
    major="${ver%%.*}"
    if [[ "$major" == 1 ]]; then major="$(echo "$ver" | cut -d. -f2)"; fi # 1.8 -> 8
    [[ "$major" =~ ^[0-9]+$ ]] || die "could not parse Java version '$ver' from $JAVA"
    if ((major < 17)); then
        die "Java $ver at $JAVA is too old: Kafka $KAFKA_VERSION needs Java 17+ (install OpenJDK 17 or point JAVA_HOME at it)"
    fi
}

require_mvn() {
    command -v mvn >/dev/null 2>&1 ||
        die "mvn not found: install Maven 3.6+ (Debian/Ubuntu: sudo apt-get install maven); it is only needed once to fetch the Kafka jars"
    [[ -f "$POM" ]] || die "missing $POM (run this script from a Tokenpulse checkout)"
}

# Take an exclusive lock on FILE using fd 9 (no-op if flock is unavailable).
lock_fd9() {
    local file="$1"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$file"
        if ! flock -w 300 9; then
            die "timed out waiting for lock $file (another kafka-local.sh still running?)"
        fi
    fi
}

# ---------------------------------------------------------------------------
# fetch

pom_digest() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$POM" | cut -d' ' -f1
    else
        cksum "$POM" | cut -d' ' -f1
    fi
}

expected_marker() { printf 'kafka=%s pom=%s\n' "$KAFKA_VERSION" "$(pom_digest)"; }

libs_complete() {
    [[ -f "$MARKER" && -f "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]] &&
        [[ "$(cat "$MARKER")" == "$(expected_marker)" ]]
}

cmd_fetch() {
    find_java
    [[ -f "$POM" ]] || die "missing $POM (run this script from a Tokenpulse checkout)"
    if libs_complete; then
        log "Kafka $KAFKA_VERSION jars already in $LIBS_DIR"
        return 0
    fi
    require_mvn
    mkdir -p "$KAFKA_HOME" || die "cannot create $KAFKA_HOME (set TOKENPULSE_KAFKA_HOME to a writable dir)"
    (
        lock_fd9 "$KAFKA_HOME/.fetch.lock"
        if libs_complete; then # someone else fetched while we waited
            exit 0
        fi
        local tmp="$KAFKA_HOME/libs.tmp.$$" mvnlog="$KAFKA_HOME/fetch.log" t0
        rm -rf "$tmp"
        t0=$(now_ms)
        log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR (first time only) ..."
        # shellcheck disable=SC2086  # TOKENPULSE_MVN_ARGS is intentionally word-split
        if ! mvn -q -B -Dstyle.color=never -f "$POM" ${TOKENPULSE_MVN_ARGS:-} \
            -Dkafka.version="$KAFKA_VERSION" -Dkafka.libs.dir="$tmp" \
            dependency:copy-dependencies >"$mvnlog" 2>&1; then
            tail -n 30 "$mvnlog" >&2 || true
            rm -rf "$tmp"
            die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (full log: $mvnlog). Check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml) and that the version exists."
        fi
        [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] ||
            die "mvn finished but $tmp/kafka_2.13-$KAFKA_VERSION.jar is missing (see $mvnlog)"
        rm -rf "$LIBS_DIR.old"
        if [[ -e "$LIBS_DIR" ]]; then mv "$LIBS_DIR" "$LIBS_DIR.old"; fi
        mv "$tmp" "$LIBS_DIR"
        rm -rf "$LIBS_DIR.old"
        expected_marker >"$MARKER"
        log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $((($(now_ms) - t0) / 1000)) s"
    )
}

# ---------------------------------------------------------------------------
# run-dir helpers

RUN_DIR=""
set_run_dir() {
    RUN_DIR="${1:-$DEFAULT_RUN_DIR}"
    [[ -n "$RUN_DIR" ]] || die "empty run dir"
    case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac
    RUN_DIR="${RUN_DIR%/}"
    [[ -n "$RUN_DIR" && "$RUN_DIR" != "$HOME" ]] || die "refusing to use '$1' as run dir"
}

pid_file() { echo "$RUN_DIR/kafka.pid"; }

# Prints the broker pid and returns 0 if the broker of RUN_DIR is alive.
running_pid() {
    local pf pid
    pf="$(pid_file)"
    [[ -f "$pf" ]] || return 1
    pid="$(tr -dc '0-9' <"$pf")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # guard against pid reuse: it must be our kafka.Kafka for this run dir
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$RUN_DIR/server.properties" || return 1
    fi
    echo "$pid"
}

# True if nothing on this host has TCP port $1 bound (any address). TIME_WAIT
# leftovers are ignored: Java server sockets use SO_REUSEADDR.
port_free() {
    local p="$1" hex f
    if [[ -r /proc/net/tcp ]]; then
        hex="$(printf ':%04X' "$p")"
        for f in /proc/net/tcp /proc/net/tcp6; do
            [[ -r "$f" ]] || continue
            if awk -v h="$hex" 'NR > 1 && $4 != "06" && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' "$f"; then
                return 1
            fi
        done
        return 0
    fi
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
}

# Pick a free port below the kernel's ephemeral range so that outgoing
# connections cannot grab it between our check and the broker's bind.
pick_port() {
    local exclude="${1:-}" lo=20000 hi=32000 eph_lo eph_hi p i
    if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
        read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
        if ((eph_lo - 1 - lo >= 1000)); then
            hi=$((eph_lo - 1))
        elif ((eph_hi < 64000)); then
            lo=$((eph_hi + 1)) hi=65000
        fi
    fi
    for ((i = 0; i < 200; i++)); do
        p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        [[ "$p" == "$exclude" ]] && continue
        port_free "$p" && { echo "$p"; return 0; }
    done
    die "could not find a free TCP port on 127.0.0.1 in $lo-$hi"
}

port_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_cluster_id() {
    # Kafka cluster ids are 16 random bytes, url-safe base64 without padding (22 chars).
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" == -* ]] || { echo "$id"; return 0; } # avoid ids that look like options
    done
}

write_configs() {
    local bport="$1" cport="$2"
    cat >"$RUN_DIR/server.properties" <<EOF
# Generated by scripts/kafka-local.sh - rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$RUN_DIR/data

# Small machine (2 cores): keep the thread pools modest.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1

# Test-friendly single-node settings.
auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=3
group.initial.rebalance.delay.ms=0

# Compacted topics are used: keep the cleaner on, with a buffer that fits the heap.
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
EOF
    cat >"$RUN_DIR/log4j2.properties" <<EOF
# Broker logging (generated by scripts/kafka-local.sh)
status = warn
# Let Kafka's own shutdown hook log until the very end of a clean shutdown.
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $RUN_DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
    cat >"$RUN_DIR/tools-log4j2.properties" <<EOF
# Logging of the console tools used for the readiness check
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

log_tail() {
    local f shown=0
    for f in "$RUN_DIR/logs/server.log" "$RUN_DIR/logs/kafka.out" "$RUN_DIR/logs/ready-check.log"; do
        if [[ -s "$f" ]]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2 || true
            shown=1
        fi
    done
    ((shown)) || printf 'kafka-local: (the broker has not written any log output yet)\n' >&2
    printf -- '-----\n' >&2
}

# Run a Kafka tool class with the cached jars; short-lived JVM tuned for startup.
kafka_tool() {
    local secs="$1"
    shift
    timeout --kill-after=5 "$secs" "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$RUN_DIR/tools-log4j2.properties" \
        -cp "$LIBS_DIR/*" "$@" 9>&-
}

# One produce/consume round trip through a fresh auto-created topic, using a
# consumer group (so the group coordinator and __consumer_offsets work too).
round_trip() {
    local bootstrap="$1" topic="$2" secs="$3" msg="$4" out
    printf '%s\n' "$msg" | kafka_tool "$secs" org.apache.kafka.tools.ConsoleProducer \
        --bootstrap-server "$bootstrap" --topic "$topic" --sync \
        --request-required-acks all --max-block-ms 20000 --request-timeout-ms 15000 \
        --producer-property delivery.timeout.ms=30000 \
        >>"$RUN_DIR/logs/ready-check.log" 2>&1 || return 1
    out="$(kafka_tool "$secs" org.apache.kafka.tools.consumer.ConsoleConsumer \
        --bootstrap-server "$bootstrap" --topic "$topic" --group "$READY_GROUP" \
        --from-beginning --max-messages 1 --timeout-ms 20000 \
        2>>"$RUN_DIR/logs/ready-check.log")" || return 1
    [[ "$out" == *"$msg"* ]]
}

# ---------------------------------------------------------------------------
# start / stop / status

cmd_start() {
    set_run_dir "${1:-}"
    [[ "$READY_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TOKENPULSE_KAFKA_READY_TIMEOUT must be a positive number of seconds, got '$READY_TIMEOUT'"
    find_java
    command -v timeout >/dev/null 2>&1 || die "'timeout' not found: install coreutils"
    mkdir -p "$RUN_DIR" || die "cannot create run dir $RUN_DIR"
    lock_fd9 "$RUN_DIR/.lock"

    local pid
    if pid="$(running_pid)"; then
        [[ -s "$RUN_DIR/bootstrap" ]] || die "broker pid $pid is running but $RUN_DIR/bootstrap is missing; run '$0 stop $RUN_DIR' and start again"
        log "already running (pid $pid, run dir $RUN_DIR)"
        cat "$RUN_DIR/bootstrap"
        return 0
    fi
    rm -f "$(pid_file)"

    cmd_fetch

    touch "$RUN_DIR/$RUN_MARKER"
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/data"

    # Reuse the previous ports when still free so the bootstrap address stays stable.
    local bport="" cport=""
    if [[ -f "$RUN_DIR/ports" ]]; then
        read -r bport cport <"$RUN_DIR/ports" || true
        if ! [[ "$bport" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] || ! port_free "$bport" || ! port_free "$cport"; then
            bport="" cport=""
        fi
    fi
    if [[ -z "$bport" ]]; then
        bport="$(pick_port)"
        cport="$(pick_port "$bport")"
    fi
    echo "$bport $cport" >"$RUN_DIR/ports"
    local bootstrap="127.0.0.1:$bport"
    write_configs "$bport" "$cport"

    local t0
    t0=$(now_ms)
    if [[ ! -f "$RUN_DIR/data/meta.properties" ]]; then
        local cid
        cid="$(random_cluster_id)"
        log "formatting KRaft storage in $RUN_DIR/data (cluster id $cid)"
        if ! kafka_tool 120 kafka.tools.StorageTool format --config "$RUN_DIR/server.properties" \
            --cluster-id "$cid" --ignore-formatted >"$RUN_DIR/logs/format.log" 2>&1; then
            cat "$RUN_DIR/logs/format.log" >&2 || true
            die "formatting the KRaft storage failed (see above). If $RUN_DIR/data is from another Kafka version, run '$0 stop $RUN_DIR --clean' and retry."
        fi
    fi

    # Rotate previous logs so the tail printed on failure belongs to this start.
    local f
    for f in server.log kafka.out ready-check.log; do
        if [[ -f "$RUN_DIR/logs/$f" ]]; then mv -f "$RUN_DIR/logs/$f" "$RUN_DIR/logs/$f.1"; fi
    done

    log "starting Kafka $KAFKA_VERSION broker on $bootstrap (controller 127.0.0.1:$cport, run dir $RUN_DIR)"
    local -a heap_opts=()
    read -r -a heap_opts <<<"$BROKER_HEAP"
    (
        cd "$RUN_DIR"
        # Detach into its own session (no SIGHUP/SIGINT from the caller's terminal).
        # setsid only execs in place (keeping $! valid) if we are not a process-group
        # leader, which is the normal case for a background job in a script.
        launcher=()
        if command -v setsid >/dev/null 2>&1 && [[ -r "/proc/$BASHPID/stat" ]]; then
            read -r -a st <"/proc/$BASHPID/stat"
            if [[ "${st[4]:-}" != "$BASHPID" ]]; then launcher=(setsid); fi
        fi
        exec "${launcher[@]}" "$JAVA" "${heap_opts[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
            -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
            -Dkafka.logs.dir="$RUN_DIR/logs" \
            -Dlog4j2.configurationFile="$RUN_DIR/log4j2.properties" \
            -cp "$LIBS_DIR/*" kafka.Kafka "$RUN_DIR/server.properties"
    ) </dev/null >"$RUN_DIR/logs/kafka.out" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$(pid_file)"
    echo "$bootstrap" >"$RUN_DIR/bootstrap"

    # Wait until the broker really works: produce + consume through it.
    local deadline=$((t0 + READY_TIMEOUT * 1000)) nonce topic remaining attempt=0
    nonce="$(date +%s)-$$-$RANDOM"
    topic="${READY_TOPIC_PREFIX}_${nonce//-/_}"
    : >"$RUN_DIR/logs/ready-check.log"
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file)"
            log_tail
            if grep -qs 'Address already in use' "$RUN_DIR/logs/server.log" "$RUN_DIR/logs/kafka.out"; then
                die "broker could not bind its ports (taken meanwhile?); just run '$0 start $RUN_DIR' again"
            fi
            die "broker process exited during startup (logs above, full logs in $RUN_DIR/logs)"
        fi
        remaining=$(((deadline - $(now_ms)) / 1000))
        if ((remaining <= 0)); then
            log_tail
            log "stopping the broker that did not become ready"
            stop_pid "$pid" 10 || true
            rm -f "$(pid_file)"
            die "Kafka broker on $bootstrap not ready after ${READY_TIMEOUT}s (logs above, full logs in $RUN_DIR/logs). Raise TOKENPULSE_KAFKA_READY_TIMEOUT on slow machines, or try '$0 stop $RUN_DIR --clean' and start again."
        fi
        # "Kafka Server started" is logged once the broker has registered and
        # caught up with the metadata log (tolerate a missing log file).
        if port_listening "$bport" && { grep -qs 'Kafka Server started' "$RUN_DIR/logs/server.log" ||
            [[ ! -s "$RUN_DIR/logs/server.log" ]]; }; then
            attempt=$((attempt + 1))
            echo "=== round trip attempt $attempt via $topic" >>"$RUN_DIR/logs/ready-check.log"
            if round_trip "$bootstrap" "$topic" "$((remaining < 40 ? remaining : 40))" "tokenpulse-ready $nonce"; then
                break
            fi
            sleep 1
        else
            sleep 0.3
        fi
    done
    log "broker ready: produce/consume round trip OK after $((($(now_ms) - t0) / 1000)).$(((($(now_ms) - t0) % 1000) / 100)) s (pid $pid)"
    # Best effort: remove the readiness topic so tests see a clean topic list.
    kafka_tool 30 org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
        --delete --topic "$topic" >>"$RUN_DIR/logs/ready-check.log" 2>&1 ||
        log "warning: could not delete readiness topic $topic (harmless)"
    echo "$bootstrap"
}

# Send SIGTERM, wait up to $2 seconds, then SIGKILL. Returns 0 once gone.
stop_pid() {
    local pid="$1" grace="$2" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "broker pid $pid still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    local clean=0 dir="" a
    for a in "$@"; do
        case "$a" in
        --clean) clean=1 ;;
        -*) die "unknown option for stop: $a" ;;
        *) [[ -z "$dir" ]] || die "stop takes at most one run dir"; dir="$a" ;;
        esac
    done
    set_run_dir "$dir"
    if [[ ! -d "$RUN_DIR" ]]; then
        log "nothing to stop: $RUN_DIR does not exist"
        return 0
    fi
    lock_fd9 "$RUN_DIR/.lock"
    local pid
    if pid="$(running_pid)"; then
        log "stopping broker pid $pid (SIGTERM, up to ${STOP_GRACE}s)"
        local t0
        t0=$(now_ms)
        stop_pid "$pid" "$STOP_GRACE" || die "broker pid $pid did not exit even after SIGKILL"
        log "stopped in $((($(now_ms) - t0) / 1000)).$(((($(now_ms) - t0) % 1000) / 100)) s"
    else
        log "broker not running (run dir $RUN_DIR)"
    fi
    rm -f "$(pid_file)"
    if ((clean)); then
        if [[ -e "$RUN_DIR/$RUN_MARKER" || -z "$(find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -print -quit)" ]]; then
            rm -rf "$RUN_DIR"
            log "removed $RUN_DIR"
        else
            die "refusing to delete $RUN_DIR: it does not look like a kafka-local run dir (no $RUN_MARKER)"
        fi
    fi
}

cmd_status() {
    set_run_dir "${1:-}"
    local pid
    if pid="$(running_pid)" && [[ -s "$RUN_DIR/bootstrap" ]]; then
        cat "$RUN_DIR/bootstrap"
        return 0
    fi
    log "not running (run dir $RUN_DIR)"
    return 1
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
    fetch) [[ $# -eq 0 ]] || die "fetch takes no arguments"; cmd_fetch ;;
    start) [[ $# -le 1 ]] || die "usage: $0 start [RUNDIR]"; cmd_start "${1:-}" ;;
    stop) cmd_stop "$@" ;;
    status) [[ $# -le 1 ]] || die "usage: $0 status [RUNDIR]"; cmd_status "${1:-}" ;;
    -h | --help | help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
