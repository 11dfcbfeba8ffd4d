-- wrk script: replays pre-signed SignalWire callbacks from a file, each thread its own stride, in order.
-- Each line: PATH<TAB>SIGNATURE<TAB>BODY. Arguments: the file, the number of wrk threads.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local count = tonumber(args[2])
  calls, next_call = {}, 0
  local n = 0
  for line in io.lines(args[1]) do
    if n % count == id then
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      table.insert(calls, wrk.format("POST", path, {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-SignalWire-Signature"] = signature}, body))
    end
    n = n + 1
  end
end

function request()
  -- Past the end it starts over: those callbacks are duplicates (the bench reports how many passes ran).
  next_call = next_call % #calls + 1
  return calls[next_call]
end
