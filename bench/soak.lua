-- wrk script of the soak (bench/soak.ts): a paced client, not a flood. Each connection waits
-- `pace_ms` between an answer and its next request; the first answer is announced on stdout
-- (from then on a request is always in flight or due), and done() prints the totals as JSON.
local pace_ms = tonumber(os.getenv("DOZE_SOAK_PACE_MS") or "10")
local announced = false

function delay()
  return pace_ms
end

function response(status, headers, body)
  if not announced then
    announced = true
    io.write("first\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p99us":%d,"maxus":%d}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(99), latency.max))
end
