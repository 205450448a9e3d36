# One target-db node: start it, make it a one-node cluster, put six keys, printing each key once
# its put was acknowledged. Run by `faultfs explore` in its mount; needs $DB (the target-db
# binary), $ADDR (host:port to listen on) and optionally $UNSAFE (a durability switch).
set -e
# The node's log goes outside the mount: in it, its writes would be part of every crash state.
log=$(mktemp)
"$DB" serve --id 1 --data-dir data --listen "$ADDR" $UNSAFE 2>"$log" &
pid=$!
trap 'rm -f "$log"; kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
# A node that cannot start (its address taken by another program, say) fails the workload with
# its reason, rather than leaving it waiting for ever.
until timeout 5 "$DB" init --addr "$ADDR" --peers "1=$ADDR" >/dev/null 2>&1; do
  kill -0 $pid 2>/dev/null || { echo "target-db did not start:" >&2; sed -n '/^Error:/,/^Stack backtrace/p' "$log" | grep -v '^Stack backtrace' >&2; exit 1; }
  sleep 0.05
done
echo created
for i in 1 2 3 4 5 6; do
  "$DB" client --addr "$ADDR" put k$i v$i >/dev/null
  echo k$i
done
