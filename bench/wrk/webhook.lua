-- wrk script of the acknowledgement benchmark (python -m bench.ack): every request is a new message of a
-- customer never seen before, stamped now as WhatsApp stamps it (seconds), so each one takes the webhook's
-- most expensive path (a new customer, a new conversation, a new turn).
--
--   wrk -t1 -c32 -d10s -s bench/wrk/webhook.lua URL -- <run tag: 1-3 digits> <texts: 1-3>
--
-- Phones are 7 + tag + thread + a counter (11 digits); message ids carry the tag too, so slices and runs
-- never repeat one another. done() prints one JSON line for the driver.

local texts = {"Здравствуйте!", "Хочу записаться на маникюр в субботу", "Подскажите сколько стоит маникюр с покрытием"}
local counter = 0
local tag = "0"
local threads = {}

function setup(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

function init(args)
  tag = args[1] or "0"
  wrk.headers["Content-Type"] = "application/json"
  wrk.method = "POST"
end

function request()
  counter = counter + 1
  local width = 9 - #tag
  local phone = string.format("7%s%d%0" .. width .. "d", tag, thread_no % 10, counter % (10 ^ width))
  local body = string.format(
    '{"messageType":"text","message":"%s","metadata":{"sender":"Bench","timestamp":%d,"messageId":"wrk-%s-%d-%d","remoteJid":"%s@s.whatsapp.net"},"mediaData":null}',
    texts[counter % #texts + 1], os.time(), tag, thread_no, counter, phone)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
