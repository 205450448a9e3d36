# The check `faultfs explore` runs in each crash state of target-db-workload.sh: once the
# cluster was created, the node must restart, become leader and serve every acknowledged key.
grep -qx created "$FAULTLINE_OUTPUT" || exit 0
"$DB" serve --id 1 --data-dir data --listen "$ADDR" 2>server.log &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
polls=0
forgotten=0
until status=$("$DB" admin --addr "$ADDR" status 2>/dev/null) && echo "$status" | grep -q '"state": "Leader"'; do
  kill -0 $pid 2>/dev/null || { echo "target-db did not start:"; grep -v '^ ' server.log | tail -3; exit 1; }
  case "$status" in *'"members": []'*) forgotten=$((forgotten+1));; esac
  [ $forgotten -lt 20 ] || { echo "the node forgot the cluster it was initialized in"; exit 1; }
  polls=$((polls+1))
  [ $polls -lt 200 ] || { echo "no leader 10 s after restart"; exit 1; }
  sleep 0.05
done
for key in $(grep -x 'k[0-9]*' "$FAULTLINE_OUTPUT"); do
  "$DB" client --addr "$ADDR" get $key | grep -q "\"value\": \"v${key#k}\"" || { echo "acknowledged $key is lost"; exit 1; }
done
