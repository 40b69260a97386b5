# Shared by benches/load/run and benches/load/instructions (sourced, not run): the packages,
# the certificate and content, the nginx backend, and Wardgate's bench configuration and user.

# Installs the Debian packages of the `command:package` pairs whose command is missing.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
}

# A P-256 certificate for 127.0.0.1 (`$1/cert.pem`, `$1/key.pem`) and the backend's files: a
# small JSON record and a 64 KiB body under `$1/www`.
make_cert_and_content() {
  local work=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  mkdir -p "$work/www/api/patients/1001" "$work/tmp"
  printf '{"patient_id":"1001","records":[{"date":"2026-10-02","type":"visit"}]}' > "$work/www/api/patients/1001/records"
  head -c 65536 /dev/zero | tr '\0' 'x' > "$work/www/api/patients/1001/big"
  chmod 755 "$work"; chmod -R a+rX "$work/www"   # nginx workers run unprivileged
}

# The backend: nginx (one worker) serving `$1/www` over plain HTTP on 127.0.0.1:$2 and, when
# `$3` is given, over TLS 1.3 with HTTP/2 on 127.0.0.1:$3 (the "direct" row of the HTTP/2 case).
start_backend() {
  local work=$1 port=$2 tls_port=${3:-}
  local tls_server=""
  if [ -n "$tls_port" ]; then
    tls_server="server { listen 127.0.0.1:$tls_port ssl http2; root $work/www; default_type application/json;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.3; }"
  fi
  cat > "$work/nginx-backend.conf" <<EOF
worker_processes 1;
pid $work/nginx-backend.pid;
error_log $work/nginx-backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $work/www; default_type application/json; }
  $tls_server
}
EOF
  nginx -c "$work/nginx-backend.conf" -p "$work"
}

# Stops what a bench started (the processes in `pids`, the nginx instances of `$work`) and
# removes `$work`; the scripts run it on exit.
cleanup() {
  local pid file
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for file in "$work"/nginx-*.pid; do
    [ -f "$file" ] && kill "$(cat "$file")" 2>/dev/null || true
  done
  rm -rf "$work"
}

BENCH_PASSWORD="bench patient password 1"

# Writes `$1/wardgate.toml` (listener on $2, admin on $3, backend on $4, `[limits]` lines $5)
# with the bench PHI route, copies the certificate from `$6`, and adds the bench patient with
# wardgate binary `$7`. Prints the patient's TOTP secret.
write_wardgate() {
  local dir=$1 port=$2 admin=$3 backend=$4 limits=$5 certs=$6 wbin=$7
  mkdir -p "$dir"; cp "$certs/cert.pem" "$certs/key.pem" "$dir/"
  cat > "$dir/wardgate.toml" <<EOF
[listen]
addr = "127.0.0.1:$port"
tls = { cert = "cert.pem", key = "key.pem" }
[admin]
addr = "127.0.0.1:$admin"
[log]
level = "warn"
[limits]
$limits
[login]
ip_limit = 1000000
[upstreams.ehr]
targets = ["http://127.0.0.1:$backend"]
[[routes]]
name = "patient-records"
path = "/api/patients/{patient_id}/**"
methods = ["GET"]
upstream = "ehr"
phi = true
audit = "batched"
allow = [{ roles = ["clinician"] }, { roles = ["patient"], match = { patient_id = "claim:patient_id" } }]
EOF
  echo "$BENCH_PASSWORD" | "$wbin" user add bench.patient --role patient --claim patient_id=1001 \
    --password-stdin --config "$dir/wardgate.toml" >/dev/null
  "$wbin" user enroll bench.patient --config "$dir/wardgate.toml" | head -1 | sed 's/.*secret=\([A-Z0-9]*\).*/\1/'
}

# Signs the bench patient in to the Wardgate on port $1 (TOTP secret $2); prints the session
# token, or fails naming what the proxy answered.
sign_in() {
  local port=$1 secret=$2 login token
  login=$(curl -sk --max-time 120 "https://127.0.0.1:$port/.wardgate/api/login" -H 'content-type: application/json' \
    -d "{\"username\":\"bench.patient\",\"password\":\"$BENCH_PASSWORD\",\"totp\":\"$(oathtool --totp -b "$secret")\"}")
  token=$(printf '%s' "$login" | sed 's/.*"token":"\([^"]*\)".*/\1/')
  [ -n "$token" ] && [ "$token" != "$login" ] || { echo "login on port $port failed: $login" >&2; return 1; }
  echo "$token"
}
