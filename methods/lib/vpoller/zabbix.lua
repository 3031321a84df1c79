-- Zabbix output, as vpoller.helpers.zabbix of vPoller 0.7.3 wrote it: an
-- item value (the first requested property of the last row) or low-level
-- discovery data ({"data": [{"{#VSPHERE.<PREFIX>.<KEY>}": value}]}), JSON
-- encoded the way Python's json.dumps(..., ensure_ascii=False) does. A key
-- whose value is null is written with null, as vPoller did.
local M = {}

local item_methods = {
  ["about"] = true, ["event.latest"] = true,
  ["vm.get"] = true, ["host.get"] = true, ["datastore.get"] = true, ["cluster.get"] = true,
  ["datacenter.get"] = true, ["resource.pool.get"] = true,
  ["vm.perf.metric.get"] = true, ["host.perf.metric.get"] = true, ["datastore.perf.metric.get"] = true,
  ["cluster.perf.metric.get"] = true, ["datacenter.perf.metric.get"] = true,
  ["host.cluster.get"] = true, ["vm.host.get"] = true, ["vm.cpu.usage.percent"] = true,
  ["vsan.health.get"] = true,
}

local lld_methods = {
  ["vm.discover"] = true, ["host.discover"] = true, ["datastore.discover"] = true,
  ["cluster.discover"] = true, ["datacenter.discover"] = true,
  ["vm.alarm.get"] = true, ["host.alarm.get"] = true, ["datastore.alarm.get"] = true,
  ["cluster.alarm.get"] = true, ["datacenter.alarm.get"] = true,
  ["session.get"] = true,
  ["vm.perf.metric.info"] = true, ["host.perf.metric.info"] = true, ["datastore.perf.metric.info"] = true,
  ["cluster.perf.metric.info"] = true, ["datacenter.perf.metric.info"] = true,
  ["host.vm.get"] = true, ["host.datastore.get"] = true, ["vm.datastore.get"] = true,
  ["datastore.host.get"] = true, ["datastore.vm.get"] = true, ["vm.snapshot.get"] = true,
}

-- json.dumps(v, ensure_ascii=False), as vPoller's helper wrote values:
-- non-ASCII text stays UTF-8, so Zabbix stores "Prüfung", not "Pr\u00fcfung".
local function dumps(v)
  if v == nil then
    return "null"
  end
  return vpoller.json.python(v, nil, false)
end

-- The keys of a row in vPoller's order: "name", then the requested
-- properties, then the rest sorted.
local function ordered_keys(row, req)
  local keys, seen = {}, {}
  local function add(k)
    if row[k] ~= nil and not seen[k] then
      seen[k] = true
      keys[#keys + 1] = k
    end
  end
  add("name")
  for _, p in ipairs(req and req.properties or {}) do
    add(p)
  end
  local rest = {}
  for k in pairs(row) do
    if not seen[k] then
      rest[#rest + 1] = k
    end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do
    add(k)
  end
  return keys
end

-- {#VSPHERE.VM.NAME}-style macros for each row, written member by member
-- so that the key order is vPoller's.
function M.lld(prefix, rows, req)
  local items = {}
  for i, row in ipairs(rows or {}) do
    local members = {}
    for j, k in ipairs(ordered_keys(row, req)) do
      local macro = "{#VSPHERE." .. prefix .. "." .. string.upper(k) .. "}"
      members[j] = dumps(macro) .. ": " .. dumps(row[k])
    end
    items[i] = "{" .. table.concat(members, ", ") .. "}"
  end
  return '{"data": [' .. table.concat(items, ", ") .. "]}"
end

local function first_property(req)
  return req.properties and req.properties[1]
end

function M.format(reply, req)
  local method = req.method
  if reply.success ~= 0 then
    return reply.msg
  end
  local result = reply.result
  if item_methods[method] then
    local rows = result or {}
    local last = rows[#rows] or {}
    local property = first_property(req)
    return dumps(property and last[property])
  elseif lld_methods[method] then
    local prefix = string.upper(method:match("^(.*)%.[^.]+$"))
    return M.lld(prefix, result, req)
  elseif method == "vm.disk.discover" then
    return M.lld("VM", result[1] and result[1].disk, { properties = { "diskPath" } })
  elseif method == "vm.guest.net.get" then
    return M.lld("VM", result.net, { properties = { "network" } })
  elseif method == "vm.disk.get" then
    local disk = result[1] and result[1].disk or {}
    local property = first_property(req)
    return dumps(property and disk[property])
  elseif method == "vm.process.get" then
    local count = 0
    for _, p in ipairs(result) do
      if not req.key or (type(p.cmdLine) == "string" and p.cmdLine:find(req.key, 1, true)) then
        count = count + 1
      end
    end
    return tostring(count)
  end
  return "[zbx-helper]: Do not know how to process " .. tostring(method) .. " method"
end

return M
