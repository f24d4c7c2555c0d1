#!/usr/bin/env bash
# Instance bootstrap for every instance backend (Amazon Linux 2023 based AMIs: AL2023, the GPU Deep
# Learning AMI, the Neuron DLAMI). The user data exports the CROSSOVER_* variables below, then runs
# this script under a trap that signals CloudFormation with its exit status: an instance counts as
# created (and a rolling update moves on) only once the server answers /ready.
set -euo pipefail

: "${CROSSOVER_BUNDLE:?s3:// URI of the serving bundle (zip of crossover_serving/)}"
: "${CROSSOVER_RUNTIME_BUNDLE:?s3:// URI of the runtime bundle (zip: locked wheels, install.sh)}"
: "${CROSSOVER_RUNTIME_DIGEST:?the runtime bundle digest (crossover.bundle.runtime_digest)}"
: "${CROSSOVER_MODEL:?s3:// URI of the model artifact}"
: "${CROSSOVER_SPEC_JSON:?serving spec (JSON)}"
: "${AWS_DEFAULT_REGION:?the region, for the metrics and queue clients}"
: "${CROSSOVER_RUNTIME:=onnxruntime}"        # onnxruntime | onnxruntime-gpu | neuron
: "${CROSSOVER_MODE:=server}"                # server (HTTP behind the load balancer) | worker (SQS)
: "${CROSSOVER_PORT:=8080}"
: "${CROSSOVER_READY_TIMEOUT_S:=600}"
: "${CROSSOVER_SPOT:=0}"                     # 1: a spot group; the process leaves cleanly on an interruption notice

readonly home=/opt/crossover
venv="$home/venv"
if [[ "$CROSSOVER_RUNTIME" == neuron ]]; then
  # The Neuron DLAMI's PyTorch environment holds torch-neuronx and the Neuron runtime bindings.
  venv=$(find /opt -maxdepth 1 -type d -name 'aws_neuronx_venv_pytorch*' | sort -V | tail -n 1)
  [[ -n "$venv" ]] || { echo "no Neuron PyTorch environment under /opt" >&2; exit 1; }
fi
readonly venv

id crossover >/dev/null 2>&1 || useradd --system --home-dir "$home" --shell /sbin/nologin crossover
mkdir -p "$home"

# The runtime: the locked wheels the deploy published for this platform and flavour, installed with no
# package index by the bundle's own install.sh (crossover/ami/install-runtime.sh). A baked image
# (ImageStack) ran the same script on the same bundle and stamped its digest: then there is nothing to do.
if [[ "$(cat "$venv/crossover-runtime" 2>/dev/null)" != "$CROSSOVER_RUNTIME_DIGEST" ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    dnf install -y -q python3.11  # from the Amazon Linux repositories in S3, through the VPC's S3 endpoint
    python3.11 -m venv "$venv"
  fi
  aws s3 cp --only-show-errors "$CROSSOVER_RUNTIME_BUNDLE" "$home/runtime.zip"
  rm -rf "$home/runtime" && "$venv/bin/python" -m zipfile -e "$home/runtime.zip" "$home/runtime"
  bash "$home/runtime/install.sh" "$venv"
  rm -rf "$home/runtime" "$home/runtime.zip"
fi

aws s3 cp --only-show-errors "$CROSSOVER_BUNDLE" "$home/bundle.zip"
rm -rf "$home/app" && "$venv/bin/python" -m zipfile -e "$home/bundle.zip" "$home/app/crossover_serving"

aws s3 cp --only-show-errors "$CROSSOVER_MODEL" "$home/model"
printf '%s\n' "$CROSSOVER_SPEC_JSON" > "$home/spec.json"
chown -R crossover: "$home"
[[ "$venv" == "$home/venv" ]] || chmod -R o+rX "$venv"

case "$CROSSOVER_MODE" in
  server) command="-m crossover_serving.server --config $home/spec.json --port $CROSSOVER_PORT" ;;
  worker) command="-m crossover_serving.worker --config $home/spec.json --queue-url ${CROSSOVER_QUEUE_URL:?} --results-bucket ${CROSSOVER_RESULTS_BUCKET:?} --max-receive-count ${CROSSOVER_MAX_RECEIVE_COUNT:-1}" ;;
  *) echo "unknown CROSSOVER_MODE: $CROSSOVER_MODE" >&2; exit 1 ;;
esac
[[ "$CROSSOVER_SPOT" == 1 ]] && command+=" --watch-spot"

cat > /etc/systemd/system/crossover.service <<UNIT
[Unit]
Description=crossover model $CROSSOVER_MODE
After=network-online.target
Wants=network-online.target

[Service]
User=crossover
WorkingDirectory=$home/app
Environment=PYTHONUNBUFFERED=1 CROSSOVER_METRICS=cloudwatch AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
ExecStart=$venv/bin/python $command
Restart=always
RestartSec=5
# SIGTERM drains: the server finishes requests in flight, the worker its batch in hand.
KillSignal=SIGTERM
TimeoutStopSec=60
# Every connection is a descriptor; the server raises its soft limit up to this.
LimitNOFILE=65536
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=$home

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now crossover.service

# Ready means able to take requests: the server answers /ready and, behind the load balancer, the load
# balancer has found this instance healthy. A switch, a canary or a rolling update moves requests onto
# an instance as soon as it signals, so it must not signal sooner.
instance_id() {
  local token
  token=$(curl -fsS --max-time 2 -X PUT http://169.254.169.254/latest/api/token \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
  curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id
}
serving() {
  curl -fsS --max-time 5 "http://127.0.0.1:$CROSSOVER_PORT/ready" >/dev/null || return 1
  [[ -z "${CROSSOVER_TARGET_GROUP:-}" ]] && return 0
  [[ "$(aws elbv2 describe-target-health --target-group-arn "$CROSSOVER_TARGET_GROUP" \
         --targets "Id=$(instance_id),Port=$CROSSOVER_PORT" \
         --query 'TargetHealthDescriptions[0].TargetHealth.State' --output text)" == healthy ]]
}
deadline=$((SECONDS + CROSSOVER_READY_TIMEOUT_S))
while ((SECONDS < deadline)); do
  if [[ "$CROSSOVER_MODE" == server ]]; then
    serving && exit 0
  else
    systemctl is-active --quiet crossover.service && exit 0
  fi
  sleep 5
done
echo "crossover did not become ready within ${CROSSOVER_READY_TIMEOUT_S}s" >&2
journalctl -u crossover.service --no-pager | tail -n 50 >&2
exit 1
