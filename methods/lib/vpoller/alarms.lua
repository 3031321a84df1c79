-- *.alarm.get: the triggered alarms of one object.
local inventory = require("vpoller.inventory")
local time = require("vpoller.time")
local M = {}

function M.method(name, kind, key)
  return {
    api = 1,
    name = name,
    description = "Get all triggered alarms of a " .. kind,
    required = { "name" },
    run = function(ctx, req)
      local row, err = inventory.lookup(ctx, kind, req.name, { "triggeredAlarmState" }, key)
      if not row then
        return nil, err
      end
      local states = row.triggeredAlarmState or {}
      if #states == 0 then
        return {}, "Successfully retrieved alarms"
      end
      -- Alarm names and entity names, all in one round trip.
      local refs, seen, paths = {}, {}, {}
      for _, s in ipairs(states) do
        for _, r in ipairs({ s.alarm, s.entity }) do
          local id = r.type .. ":" .. r.value
          if not seen[id] then
            seen[id] = true
            refs[#refs + 1] = r
            paths[r.type] = r.type == "Alarm" and { "info.name" } or { "name" }
          end
        end
      end
      local names = {}
      for _, r in ipairs(ctx:get(refs, paths)) do
        names[r._ref.type .. ":" .. r._ref.value] = r["info.name"] or r.name
      end
      local out = {}
      for _, s in ipairs(states) do
        out[#out + 1] = {
          key = s.key,
          info = names[s.alarm.type .. ":" .. s.alarm.value],
          time = time.python(s.time),
          entity = names[s.entity.type .. ":" .. s.entity.value],
          acknowledged = s.acknowledged,
          overallStatus = s.overallStatus,
          acknowledgedByUser = s.acknowledgedByUser or vpoller.null,
        }
      end
      return out, "Successfully retrieved alarms"
    end,
  }
end

return M
