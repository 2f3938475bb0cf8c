#!/bin/sh
# Renders the page from the environment (Heroku-style config: GREETING, PORT), then serves it
# with busybox httpd: `/` is the page, `/health` answers 200 with "ok".
set -eu

PORT="${PORT:-8080}"
GREETING="${GREETING:-Hello from Shaman}"
WWW=/tmp/www

html() {
  printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

mkdir -p "$WWW"
cat > "$WWW/index.html" <<PAGE
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>hello</title></head>
<body>
<h1>$(html "$GREETING")</h1>
<p>This is <code>examples/hello</code>, built offline and deployed by Shaman.</p>
<ul>
<li>GREETING: $(html "$GREETING")</li>
<li>PORT: $(html "$PORT")</li>
<li>host: $(html "$(hostname)")</li>
</ul>
</body>
</html>
PAGE
printf 'ok\n' > "$WWW/health"

httpd -f -p "0.0.0.0:$PORT" -h "$WWW" &
server=$!
# As PID 1, sh gets no default SIGTERM handling: forward it, or every stop waits for SIGKILL.
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' TERM INT
wait "$server"
