#!/usr/bin/env bash
# Schema-driven fuzzing of the live HTTP API (`just fuzz-api`): schemathesis generates
# requests from docs/openapi.yaml — valid ones and ones that break the schema — sends
# them to a `koalabooth serve` on 127.0.0.1 (an ephemeral port, a throw-away data
# directory, the tiny random model) and checks every response: no 5xx, status codes,
# content types, headers and bodies as the document says, 405 for undeclared methods,
# auth not ignored. Not `positive_data_acceptance`: a schema-valid upload of random
# bytes as a photo is rightly a 400 (the API checks the pictures). Bounded by
# --max-examples per operation and a time budget; the server is stopped at the end,
# whatever happens; on failure its logs and the reports stay in .fuzz-api-failure/.
# Usage: tools/fuzz-api/fuzz.sh BIN [EXAMPLES] [SECONDS]
set -euo pipefail
bin=$1
examples=${2:-100}
budget=${3:-240}
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv-fuzz-api"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$root/tools/fuzz-api/requirements.txt"
fi

work=$(mktemp -d)
server=""
status=0
cleanup() {
    if [ -n "$server" ]; then kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    if [ "$status" != 0 ]; then
        rm -rf "$root/.fuzz-api-failure"; mv "$work" "$root/.fuzz-api-failure"
        echo "kept the server's logs and the report in .fuzz-api-failure/"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

"$bin" model init --preset tiny --out "$work/tiny" --seed 0 >/dev/null
key=$("$bin" keys create fuzz --home "$work/home")
other=$("$bin" keys create other --home "$work/home")
"$bin" serve --host 127.0.0.1 --port 0 --home "$work/home" --model "tiny=$work/tiny" > "$work/serve.out" 2> "$work/serve.err" &
server=$!
for _ in $(seq 1 300); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve.out" | head -n1 || true)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.err"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "serve printed no URL"; cat "$work/serve.err"; exit 1; }

# Subjects of both keys, so that ids in paths sometimes exist (and key isolation is probed).
photos=("$root"/subjects/robot-toy/*.jpg)
form=(); for p in "${photos[@]:0:3}"; do form+=(-F "photos=@$p;type=image/jpeg"); done
for k in "$key" "$other"; do
    name="seed-$RANDOM"
    curl -sS -o /dev/null -w "seed subject %{http_code}\n" -H "Authorization: Bearer $k" \
        -F "name=$name" -F "token=sks" -F "class=toy" "${form[@]}" "$url/v1/subjects"
done

echo "== schemathesis against $url (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
"$venv/bin/schemathesis" run "$root/docs/openapi.yaml" --url "$url" \
    -H "Authorization: Bearer $key" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-examples "$examples" --max-time "$budget" --seed 1 --workers 2 --request-timeout 30 --generation-database none \
    --report ndjson,har --report-ndjson-path "$work/events.ndjson" --report-har-path "$work/requests.har" --no-color || status=$?
python3 - "$work/requests.har" <<'PY' || status=1
import collections, json, sys
entries = json.load(open(sys.argv[1]))["log"]["entries"]
codes = collections.Counter(e["response"]["status"] for e in entries)
print(f"== {len(entries)} requests; responses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
sys.exit(1 if any(k >= 500 or k == 0 for k in codes) else 0)
PY
if grep -q ' 5[0-9][0-9] ' "$work/serve.err"; then echo "the server logged a 5xx:"; grep ' 5[0-9][0-9] ' "$work/serve.err" | head; status=1; fi
if ! kill -0 "$server" 2>/dev/null; then echo "the server died during the run"; status=1; fi
exit $status
