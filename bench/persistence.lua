-- wrk script of bench/persistence: GET / with an X-Client header that identifies the client.
--
--   wrk -s bench/persistence.lua URL -- repeat [KEYS]   X-Client: k0 .. k(KEYS-1) in turn (default
--                                                       1000): after one pass every key is known, so
--                                                       a persisting proxy finds each in its cache
--   wrk -s bench/persistence.lua URL -- new TAG         a new X-Client on every request:
--                                                       TAG-<thread>-<counter>; give each run its own
--                                                       TAG so no key is ever seen twice
--
-- Every variant sends the same request shape (one X-Client header of a similar length), so rows
-- without persistence pay the same client and parsing work. The requests are built as strings
-- (no wrk.format per request) to keep the load generator's own cost low.

local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local mode, head, reqs, nreqs, tag
local n = 0

function init(args)
  mode = args[1] or "repeat"
  head = "GET / HTTP/1.1\r\nHost: " .. wrk.headers["Host"] .. "\r\nX-Client: "
  if mode == "repeat" then
    local keys = tonumber(args[2] or "1000")
    if keys == nil or keys < 1 then error("persistence.lua: repeat KEYS must be a positive number") end
    reqs, nreqs = {}, keys
    for i = 0, keys - 1 do reqs[i + 1] = head .. "k" .. i .. "\r\n\r\n" end
    -- threads start at different offsets so that together they still cycle through all keys
    n = (tid or 0) * 7919 % keys
  elseif mode == "new" then
    tag = args[2]
    if tag == nil or tag == "" then error("persistence.lua: new needs a TAG unique to this run") end
    head = head .. tag .. "-" .. (tid or 0) .. "-"
  else
    error("persistence.lua: mode must be repeat or new, not '" .. tostring(mode) .. "'")
  end
end

function request()
  n = n + 1
  if mode == "repeat" then
    return reqs[n % nreqs + 1]
  end
  return head .. n .. "\r\n\r\n"
end
