# One target-db node: start it, make it a one-node cluster, put six keys, printing each key once
# its put was acknowledged. Run by `faultfs explore` in its mount; needs $DB (the target-db
# binary), $ADDR (host:port to listen on) and optionally $UNSAFE (a durability switch).
set -e
"$DB" serve --id 1 --data-dir data --listen "$ADDR" $UNSAFE 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
until "$DB" init --addr "$ADDR" --peers "1=$ADDR" >/dev/null 2>&1; do sleep 0.05; done
echo created
for i in 1 2 3 4 5 6; do
  "$DB" client --addr "$ADDR" put k$i v$i >/dev/null
  echo k$i
done
