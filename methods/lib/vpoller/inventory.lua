-- Shared building blocks of the inventory methods (*.discover, *.get).
local M = {}

-- The property list of a request with "name" first, as vPoller asks for it.
function M.with_name(properties)
  local out = { "name" }
  for _, p in ipairs(properties or {}) do
    if p ~= "name" then
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

-- Every object of a type, with the requested properties.
function M.discover(ctx, kind, req)
  return M.plain(ctx:discover(kind, M.with_name(req.properties))), "Successfully discovered objects"
end

-- One object, found by `key` (default "name") equal to the request's name.
function M.get(ctx, kind, req, key)
  local ref = ctx:find(kind, key or "name", req.name)
  if not ref then
    return nil, "Cannot find object " .. tostring(req.name)
  end
  return M.plain(ctx:get(ref, M.with_name(req.properties))), "Successfully retrieved object properties"
end

return M
