return {
  api = 1,
  name = "perf.interval.info",
  description = "Get the historical performance intervals of the vSphere host",
  run = function(ctx, req)
    local row = ctx:get(ctx:content().perfManager, { "historicalInterval" })[1]
    local out = {}
    for i, v in ipairs(row.historicalInterval or {}) do
      out[i] = {
        enabled = v.enabled,
        key = v.key,
        length = v.length,
        level = v.level,
        name = v.name,
        samplingPeriod = v.samplingPeriod,
      }
    end
    return out, "Successfully retrieved performance historical intervals"
  end,
}
