-- wrk script for bench/wrk_get.sh. With WRK_LIMIT=N set, the (single) thread stops after N responses;
-- either way the run ends with one line "WRK_JSON {...}" holding requests, duration, latency
-- percentiles (microseconds) and error counts.
local limit = tonumber(os.getenv("WRK_LIMIT") or "0")
local count = 0

if limit > 0 then
  function response(status, headers, body)
    count = count + 1
    if count >= limit then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
