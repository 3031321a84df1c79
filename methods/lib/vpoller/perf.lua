-- *.perf.metric.info and *.perf.metric.get: performance counters of one
-- object, through the PerformanceManager. Counter names are
-- "group.name.unit.rollup", resolved by the core's per-agent counter cache;
-- samples come through ctx:perf, which batches and caches them, and the
-- provider summary and historical intervals are read once per agent.
local inventory = require("vpoller.inventory")
local time = require("vpoller.time")
local M = {}

-- vSphere's real-time sampling period, in seconds.
local REFRESH_PERIOD = 20

local function perf_manager(ctx)
  return ctx:content().perfManager
end

-- The provider summary says whether the object has real-time statistics
-- (and at what interval) or only historical ones.
local function provider(ctx, entity)
  return ctx:perf_summary(entity)
end

function M.info_method(name, kind, key)
  return {
    api = 1,
    name = name,
    description = "Get the performance metrics available for a " .. kind,
    required = { "name" },
    run = function(ctx, req)
      local row, err = inventory.lookup(ctx, kind, req.name, {}, key)
      if not row then
        return nil, err
      end
      local wanted
      if req["counter-name"] then
        wanted = ctx:counter_id(req["counter-name"])
        if not wanted then
          return nil, "Unknown performance counter requested"
        end
      end
      local summary = provider(ctx, row._ref)
      local args = { entity = row._ref }
      if summary.currentSupported then
        args.intervalId = summary.refreshRate
      end
      local metrics = ctx:call(perf_manager(ctx), "QueryAvailablePerfMetric", args) or {}
      local out = {}
      for _, m in ipairs(metrics) do
        if not wanted or m.counterId == wanted then
          out[#out + 1] = { counterId = ctx:counter_name(m.counterId) or tostring(m.counterId), instance = m.instance or "" }
        end
      end
      return out, "Successfully retrieved performance metrics"
    end,
  }
end

-- `states`: for hosts and VMs, the power and connection state that must
-- hold, with vPoller's messages.
function M.get_method(name, kind, key, opts)
  opts = opts or {}
  local required = { "name", "counter-name" }
  if opts.needs_interval then
    required[#required + 1] = "perf-interval"
  end
  return {
    api = 1,
    name = name,
    description = "Get a performance metric of a " .. kind,
    required = required,
    run = function(ctx, req)
      local props = {}
      if opts.label then
        props = { "runtime.powerState", "runtime.connectionState" }
      end
      -- The power state may be as old as the samples asked for: one
      -- real-time refresh period.
      local row = inventory.lookup(ctx, kind, req.name, props, key, nil, REFRESH_PERIOD)
      if not row then
        return nil, "Cannot find object: " .. tostring(req.name)
      end
      if opts.label then
        if row["runtime.powerState"] ~= "poweredOn" then
          return nil, opts.label .. " is not powered on, cannot get performance metrics"
        end
        if row["runtime.connectionState"] ~= "connected" then
          return nil, opts.label .. " is not connected, cannot get performance metrics"
        end
      end
      local counter = ctx:counter_id(req["counter-name"])
      if not counter then
        return nil, "Unknown performance counter requested"
      end
      local max_sample = tonumber(req["max-sample"] or 1)
      if not max_sample or max_sample < 1 or max_sample ~= math.floor(max_sample) then
        return nil, "Invalid message, cannot retrieve performance metrics"
      end
      local interval
      if req["perf-interval"] then
        local intervals = ctx:perf_intervals() or {}
        for _, i in ipairs(intervals) do
          if i.name == req["perf-interval"] then
            interval = i.samplingPeriod
          end
        end
        if not interval then
          return nil, "Historical interval " .. req["perf-interval"] .. " does not exists"
        end
      else
        local summary = provider(ctx, row._ref)
        if not summary.currentSupported then
          return nil, "No historical performance interval provided for entity " .. tostring(row.name)
        end
        interval = summary.refreshRate
      end
      local instance = req.instance or ""
      local results = ctx:perf({
        entity = row._ref,
        counter = counter,
        instance = instance,
        interval = interval,
        max_sample = math.floor(max_sample),
      })
      local out = {}
      for _, entity in ipairs(results) do
        local samples = entity.sampleInfo or {}
        for _, series in ipairs(entity.value or {}) do
          -- Samples pair with values; a sample without a value is left out.
          for i, value in ipairs(series.value or {}) do
            local sample = samples[i] or {}
            out[#out + 1] = {
              interval = sample.interval,
              timestamp = time.python(sample.timestamp),
              counterId = req["counter-name"],
              instance = series.id and series.id.instance or instance,
              value = value,
            }
          end
        end
      end
      return out, "Successfully retrieved performance metrics"
    end,
  }
end

return M
