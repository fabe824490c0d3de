-- POST the file named by $BENCH_BODY (headers come from wrk's -H flags) and, when done,
-- print one machine-readable line that bench/loadgen.py parses: exact counts and latency
-- percentiles in microseconds, instead of wrk's rounded human summary.

local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,"socket_errors":%d,'
         .. '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.status, e.connect + e.read + e.write,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
