-- Every performance counter of the vSphere host, as vPoller listed them.
local function plain(value)
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    if k ~= "_type" then
      out[k] = plain(v)
    end
  end
  return out
end

return {
  api = 1,
  name = "perf.metric.info",
  description = "Get all performance counters supported by the vSphere host",
  run = function(ctx, req)
    local out = {}
    for i, c in ipairs(ctx:counters()) do
      out[i] = plain(c)
    end
    return out, "Successfully retrieved performance metrics info"
  end,
}
