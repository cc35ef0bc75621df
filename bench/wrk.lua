-- wrk script for every cell of bench/run.py.
--   WRK_UPLOAD_BYTES=N  turns each request into a POST of an N-byte body.
-- done() prints one JSON line, prefixed with "BENCH ", that run.py parses.

local upload = tonumber(os.getenv("WRK_UPLOAD_BYTES") or "")
if upload then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.body = string.rep("u", upload)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
