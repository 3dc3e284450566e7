/* A client of the edge-agent wire protocol written in C from docs/protocol.md alone (libzmq for
 * the socket, jansson for JSON): it checks what the document promises against a live daemon.
 *
 *     cc -O2 -o conformance conformance.c -lzmq -ljansson
 *     ./conformance ipc:///run/user/1000/edge-agent/agent.sock [--speech]
 *
 * Prints one line per check (PASS/FAIL and why) and exits with the number of failed checks.
 * Nothing here comes from the Python client: where this program and the daemon disagree, the
 * document decides which one is wrong. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_FRAMES 8

typedef struct {
    json_t *header;                  /* frame 0, parsed */
    size_t nframes;                  /* frames after the header */
    size_t sizes[MAX_FRAMES];
    int envelope;                    /* an empty frame came first */
} message_t;

static void *sock;
static int failures = 0, checks = 0;

static void check(int ok, const char *name, const char *why) {
    checks++;
    if (!ok) failures++;
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, ok ? "" : ": ", ok ? "" : why);
}

/* send a header (and optional attachment frames) */
static void send_frames(const char *header, const char **extra, size_t nextra, int envelope) {
    if (envelope) zmq_send(sock, "", 0, ZMQ_SNDMORE);
    zmq_send(sock, header, strlen(header), nextra ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < nextra; i++) zmq_send(sock, extra[i], strlen(extra[i]), i + 1 < nextra ? ZMQ_SNDMORE : 0);
}

static void send_header(const char *header) { send_frames(header, NULL, 0, 0); }

/* one whole multipart message; header NULL on timeout or unparsable JSON */
static message_t receive(void) {
    message_t m = {0};
    int first = 1, got_header = 0;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) { zmq_msg_close(&part); m.header = NULL; return m; }
        size_t size = zmq_msg_size(&part);
        if (first && size == 0) {
            m.envelope = 1;
        } else if (!got_header) {
            json_error_t err;
            m.header = json_loadb(zmq_msg_data(&part), size, 0, &err);
            got_header = 1;
        } else if (m.nframes < MAX_FRAMES) {
            m.sizes[m.nframes++] = size;
        }
        first = 0;
        int more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (!more) return m;
    }
}

static const char *str(json_t *obj, const char *key) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int is(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static int final_of(json_t *h) { return json_is_true(json_object_get(h, "final")); }

/* the terminal event of request `id`, skipping its non-final events */
static json_t *terminal(const char *id) {
    for (;;) {
        message_t m = receive();
        if (!m.header) return NULL;
        if (is(str(m.header, "id"), id) && final_of(m.header)) return m.header;
        json_decref(m.header);
    }
}

static const char *error_code(json_t *ev) { return str(json_object_get(ev, "error"), "code"); }

static void expect_error(const char *name, const char *header, const char *id, const char *code,
                         const char *field) {
    send_header(header);
    message_t m = receive();
    char why[512];
    json_t *h = m.header;
    const char *got_field = h ? str(json_object_get(h, "error"), "field") : NULL;
    int id_ok = id ? is(str(h, "id"), id) : (h && json_is_null(json_object_get(h, "id")));
    int ok = h && is(str(h, "event"), "error") && final_of(h) && is(error_code(h), code) && id_ok &&
             (!field || is(got_field, field));
    char *dump = h ? json_dumps(h, JSON_COMPACT) : NULL;
    snprintf(why, sizeof why, "expected %s%s%s, got %.300s", code, field ? " field " : "", field ? field : "",
             dump ? dump : "(nothing)");
    check(ok, name, why);
    free(dump);
    json_decref(h);
}

static void check_describe_and_status(void) {
    send_header("{\"v\": 1, \"id\": \"d1\", \"op\": \"describe\"}");
    message_t m = receive();
    json_t *h = m.header, *proto = json_object_get(h, "protocol"), *ops = json_object_get(h, "ops");
    int has_chat = 0;
    size_t i;
    json_t *op;
    json_array_foreach(ops, i, op) if (is(json_string_value(op), "chat")) has_chat = 1;
    check(h && is(str(h, "event"), "result") && final_of(h) && is(str(h, "id"), "d1") &&
          json_integer_value(json_object_get(proto, "version")) == 1 && has_chat &&
          json_is_object(json_object_get(h, "limits")),
          "describe: result with protocol version 1, ops and limits", "missing fields");
    json_decref(h);

    send_header("{\"v\": 1, \"id\": \"s1\", \"op\": \"status\"}");
    m = receive();
    h = m.header;
    check(h && is(str(h, "event"), "result") && json_is_number(json_object_get(h, "uptime_s")) &&
          json_is_object(json_object_get(h, "engines")) && json_is_integer(json_object_get(h, "inflight")),
          "status: uptime_s, inflight, engines", "missing fields");
    json_decref(h);

    send_header("{\"v\": 1, \"id\": \"p1\", \"op\": \"ping\"}");
    m = receive();
    check(m.header && json_is_true(json_object_get(m.header, "pong")) && final_of(m.header), "ping: pong",
          "no pong");
    json_decref(m.header);
}

static void check_refusals(void) {
    expect_error("unknown op", "{\"v\": 1, \"id\": \"e1\", \"op\": \"fly\"}", "e1", "bad_request", NULL);
    expect_error("unknown field", "{\"v\": 1, \"id\": \"e2\", \"op\": \"ping\", \"colour\": 1}", "e2",
                 "bad_request", NULL);
    expect_error("version as a string", "{\"v\": \"1\", \"id\": \"e3\", \"op\": \"ping\"}", "e3", "unsupported", NULL);
    expect_error("missing version", "{\"id\": \"e4\", \"op\": \"ping\"}", "e4", "unsupported", NULL);
    expect_error("invalid JSON: id null", "{\"v\": 1, \"id\": ", NULL, "bad_request", NULL);
    expect_error("header that is no object: id null", "[1, 2]", NULL, "bad_request", NULL);
    expect_error("lone surrogate in a field", "{\"v\": 1, \"id\": \"e5\", \"op\": \"say\", \"text\": \"a\\ud800\"}", "e5",
                 "bad_request", NULL);
    expect_error("lone surrogate in the id: id null", "{\"v\": 1, \"id\": \"\\udfff\", \"op\": \"ping\"}", NULL,
                 "bad_request", NULL);
    expect_error("sessions without action", "{\"v\": 1, \"id\": \"e6\", \"op\": \"sessions\"}", "e6", "bad_request",
                 "action");
    expect_error("sessions reset all by a client that is no admin",
                 "{\"v\": 1, \"id\": \"e7\", \"op\": \"sessions\", \"action\": \"reset\", \"all\": true}", "e7",
                 "unauthorized", "all");
    const char *extra[] = {"attachment"};
    send_frames("{\"v\": 1, \"id\": \"e8\", \"op\": \"ping\"}", extra, 1, 0);
    message_t m = receive();
    check(m.header && is(error_code(m.header), "bad_request") && is(str(m.header, "id"), "e8"),
          "frames after the header of ping", "not bad_request");
    json_decref(m.header);
}

static void check_chat_stream(void) {
    send_header("{\"v\": 1, \"id\": \"c1\", \"op\": \"chat\", \"max_tokens\": 12,"
                " \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}");
    char text[8192] = "";
    long tokens = 0;
    int events = 0, accepted_first = 0, finals = 0, ok = 1;
    json_t *result = NULL;
    while (!result) {
        message_t m = receive();
        if (!m.header) { ok = 0; break; }
        const char *kind = str(m.header, "event");
        if (!is(str(m.header, "id"), "c1")) ok = 0;
        if (events == 0) accepted_first = is(kind, "accepted");
        events++;
        if (is(kind, "delta")) {
            const char *t = str(m.header, "text");
            if (t && strlen(text) + strlen(t) < sizeof text) strcat(text, t);
            tokens += json_integer_value(json_object_get(m.header, "tokens"));
        }
        if (final_of(m.header)) { finals++; result = m.header; } else json_decref(m.header);
    }
    check(ok && accepted_first, "chat: accepted comes first, every event carries the id", "order or id wrong");
    check(result && is(str(result, "event"), "result") && finals == 1, "chat: exactly one terminal result",
          "no result");
    json_t *usage = json_object_get(result, "usage");
    check(result && is(str(result, "text"), text), "chat: result text is the deltas joined", "text differs");
    check(usage && json_integer_value(json_object_get(usage, "generated_tokens")) == tokens,
          "chat: usage.generated_tokens is the deltas' tokens", "counts differ");
    send_header("{\"v\": 1, \"id\": \"p2\", \"op\": \"ping\"}");
    message_t m = receive();
    check(m.header && is(str(m.header, "id"), "p2"), "chat: nothing after the terminal event", "a stray event");
    json_decref(m.header);
    json_decref(result);
}

static void check_cancel_and_duplicate_id(void) {
    send_header("{\"v\": 1, \"id\": \"long\", \"op\": \"chat\", \"max_tokens\": 1000,"
                " \"messages\": [{\"role\": \"user\", \"content\": \"Tell a long story\"}]}");
    send_header("{\"v\": 1, \"id\": \"long\", \"op\": \"ping\"}"); /* same id, still in flight */
    send_header("{\"v\": 1, \"id\": \"x1\", \"op\": \"cancel\", \"target\": \"long\"}");
    int dup_refused = 0, cancel_ok = 0, long_final = 0, after_final = 0;
    const char *long_code = NULL;
    json_t *keep = NULL;
    while (!(long_final && cancel_ok && dup_refused)) {
        message_t m = receive();
        json_t *h = m.header;
        if (!h) break;
        const char *id = str(h, "id");
        if (is(id, "x1") && json_is_true(json_object_get(h, "cancelled"))) cancel_ok = 1;
        if (is(id, "long") && is(error_code(h), "bad_request") &&
            is(str(json_object_get(h, "error"), "field"), "id") && !long_final)
            dup_refused = 1;
        else if (is(id, "long") && long_final) after_final = 1;
        else if (is(id, "long") && final_of(h)) { long_final = 1; long_code = error_code(h); keep = h; continue; }
        json_decref(h);
    }
    check(dup_refused, "an id still in flight is refused with field id", "not refused");
    check(cancel_ok, "cancel answers cancelled true", "no");
    check(long_final && is(long_code, "cancelled") &&
          is(str(json_object_get(keep, "error"), "reason"), "cancel") && !after_final,
          "a cancelled request ends with error cancelled, reason cancel", long_code ? long_code : "no end");
    json_decref(keep);
    send_header("{\"v\": 1, \"id\": \"x2\", \"op\": \"cancel\", \"target\": \"nothing\"}");
    message_t m = receive();
    check(m.header && json_is_false(json_object_get(m.header, "cancelled")) &&
          is(str(m.header, "reason"), "unknown"), "cancel of an unknown id: cancelled false, reason unknown", "");
    json_decref(m.header);
}

static void check_sessions(void) {
    send_header("{\"v\": 1, \"id\": \"n1\", \"op\": \"sessions\", \"action\": \"create\", \"system\": \"Be brief.\"}");
    message_t m = receive();
    const char *sid = str(m.header, "session");
    char session[128] = "";
    if (sid) snprintf(session, sizeof session, "%s", sid);
    check(strncmp(session, "s-", 2) == 0 && strlen(session) > 20, "sessions create: an unguessable s- id", session);
    json_decref(m.header);
    char header[512];
    snprintf(header, sizeof header, "{\"v\": 1, \"id\": \"n2\", \"op\": \"chat\", \"session\": \"%s\","
             " \"message\": \"Hi\", \"max_tokens\": 3}", session);
    send_header(header);
    json_t *t = terminal("n2");
    check(t && is(str(t, "session"), session), "chat in a session: result names the session", "no");
    json_decref(t);
    send_header("{\"v\": 1, \"id\": \"n3\", \"op\": \"sessions\", \"action\": \"list\"}");
    m = receive();
    json_t *list = json_object_get(m.header, "sessions"), *s;
    size_t i;
    int found = 0;
    json_array_foreach(list, i, s) if (is(str(s, "session"), session) && is(str(s, "kind"), "chat") &&
                                       json_integer_value(json_object_get(s, "turns")) == 1) found = 1;
    check(found, "sessions list: the session, kind chat, 1 turn", "not listed");
    json_decref(m.header);
    snprintf(header, sizeof header, "{\"v\": 1, \"id\": \"n4\", \"op\": \"sessions\", \"action\": \"delete\","
             " \"session\": \"%s\"}", session);
    send_header(header);
    m = receive();
    json_decref(m.header);
    snprintf(header, sizeof header, "{\"v\": 1, \"id\": \"n5\", \"op\": \"chat\", \"session\": \"%s\","
             " \"message\": \"Hi\"}", session);
    expect_error("chat in a deleted session", header, "n5", "not_found", NULL);
}

static void check_envelope(void) {
    send_frames("{\"v\": 1, \"id\": \"v1\", \"op\": \"ping\"}", NULL, 0, 1);
    message_t m = receive();
    check(m.envelope && m.header && json_is_true(json_object_get(m.header, "pong")),
          "an envelope-style client gets an empty frame first", "no envelope");
    json_decref(m.header);
}

static void check_speech(void) {
    send_header("{\"v\": 1, \"id\": \"a1\", \"op\": \"say\", \"text\": \"One. Two three.\","
                " \"output\": \"client\", \"format\": \"pcm\"}");
    int audio = 0, frames_ok = 1;
    json_t *end = NULL;
    while (!end) {
        message_t m = receive();
        if (!m.header) break;
        if (is(str(m.header, "event"), "audio")) {
            audio++;
            json_int_t samples = json_integer_value(json_object_get(m.header, "samples"));
            if (m.nframes != 1 || m.sizes[0] != (size_t)(2 * samples)) frames_ok = 0;
        }
        if (final_of(m.header)) end = m.header; else json_decref(m.header);
    }
    check(end && is(str(end, "state"), "end") && audio == 2 && frames_ok,
          "say output client pcm: one audio event per sentence, 2 bytes a sample", "wrong audio");
    json_decref(end);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s ENDPOINT [--speech]\n", argv[0]); return 100; }
    void *ctx = zmq_ctx_new();
    sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout_ms = 30000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_connect(sock, argv[1]) != 0) { fprintf(stderr, "cannot connect to %s\n", argv[1]); return 100; }
    check_describe_and_status();
    check_refusals();
    check_chat_stream();
    check_cancel_and_duplicate_id();
    check_sessions();
    check_envelope();
    if (argc > 2 && strcmp(argv[2], "--speech") == 0) check_speech();
    printf("%d of %d checks passed\n", checks - failures, checks);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return failures;
}
