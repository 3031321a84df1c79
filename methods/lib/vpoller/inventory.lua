-- Building blocks of the inventory methods: finding an object by name,
-- reading properties, following references to names.
local M = {}

-- The property list of a request with "name" first, as vPoller asks for it.
function M.with_name(properties, first)
  local out = { first or "name" }
  for _, p in ipairs(properties or {}) do
    if p ~= out[1] then
      out[#out + 1] = p
    end
  end
  return out
end

-- Rows without the object references ctx adds, as vPoller returns them.
function M.plain(rows)
  for _, row in ipairs(rows) do
    row._ref = nil
  end
  return rows
end

-- The object of `kind` whose `key` property ("name", or "info.url" for
-- datastores) is `value`, read with `properties`, in one call to the core
-- (which rebuilds its name index once if the entry it had was stale).
-- Returns the row, or nil and vPoller's message.
-- `max_age` (seconds, optional): a row read that recently is answer enough.
function M.lookup(ctx, kind, value, properties, key, missing_format, max_age)
  key = key or "name"
  local wanted = M.with_name(properties, key)
  if key ~= "name" then
    table.insert(wanted, 1, "name")
  end
  local row = ctx:lookup(kind, key, value, wanted, max_age)
  if not row then
    return nil, string.format(missing_format or "Cannot find object %s", tostring(value))
  end
  return row
end

-- A method that lists every object of a kind.
function M.discover_method(name, kind, description)
  return {
    api = 1,
    name = name,
    description = description,
    run = function(ctx, req)
      return M.plain(ctx:discover(kind, M.with_name(req.properties))), "Successfully discovered objects"
    end,
  }
end

-- A method that reads properties of one object, found by name (or by
-- `key`, e.g. "info.url").
function M.get_method(name, kind, description, key)
  return {
    api = 1,
    name = name,
    description = description,
    required = { "name" },
    run = function(ctx, req)
      local row, err = M.lookup(ctx, kind, req.name, req.properties, key)
      if not row then
        return nil, err
      end
      row._ref = nil
      return { row }, "Successfully retrieved object properties"
    end,
  }
end

-- The names of the objects a property of one object refers to (a host's
-- VMs, a VM's datastores), with extra properties per row.
function M.related(ctx, refs, properties)
  if type(refs) ~= "table" or #refs == 0 then
    return {}
  end
  local rows = ctx:get(refs, properties or { "name" })
  return M.plain(rows)
end

-- A method returning the objects one object refers to through `property`.
-- `as_object` gives vPoller's {name = ..., [field] = [...]} shape.
function M.related_method(spec)
  return {
    api = 1,
    name = spec.name,
    description = spec.description,
    required = { "name" },
    run = function(ctx, req)
      local row, err = M.lookup(ctx, spec.kind, req.name, { spec.property }, spec.key)
      if not row then
        return nil, err
      end
      local refs = row[spec.property] or {}
      if spec.refs then
        refs = spec.refs(refs)
      end
      local related = M.related(ctx, refs, spec.properties)
      if spec.as_object then
        return { name = row.name, [spec.as_object] = related }, "Successfully discovered objects"
      end
      return related, "Successfully discovered objects"
    end,
  }
end

return M
