-- wrk's script for bench/bench_gateway.py: POST one chat request to the gateway, every other wrk thread (so half
-- of the connections) with "stream": true, and check every answer: status 200 and, streamed, ending in
-- `data: [DONE]`; whole, carrying a "content". Arguments (after `--`): the plain body, then the streaming body.
-- `done` prints one line the benchmark reads: requests answered, how many of them failed the check, and wrk's own
-- socket errors (connect, read, write, timeout) and non-2xx/3xx count.

local threads = {}

function setup(thread)
   thread:set("streaming", #threads % 2 == 1)
   table.insert(threads, thread)
end

function init(args)
   local body = streaming and args[2] or args[1]
   req = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
   answered, failed = 0, 0
end

function request()
   return req -- built once per thread
end

local done_marker = "data: [DONE]\n\n"

function response(status, headers, body)
   answered = answered + 1
   if status ~= 200 then
      failed = failed + 1
   elseif streaming then
      if body:sub(-#done_marker) ~= done_marker then
         failed = failed + 1
      end
   elseif not body:find('"content"', 1, true) then
      failed = failed + 1
   end
end

function done(summary, latency, requests)
   local answered, failed, streamed = 0, 0, 0
   for _, thread in ipairs(threads) do
      answered = answered + thread:get("answered")
      failed = failed + thread:get("failed")
      if thread:get("streaming") then
         streamed = streamed + thread:get("answered")
      end
   end
   local e = summary.errors
   io.write(string.format(
      "wrk-result answered=%d failed=%d streamed=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d\n",
      answered, failed, streamed, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50)))
end
