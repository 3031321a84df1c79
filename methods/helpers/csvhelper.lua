-- CSV of a list result: the header is the sorted keys of the first row; a
-- key missing from a later row reads None; lines end in \r\n. A failed
-- reply is printed as indented JSON.
local function cell(v)
  if v == nil then
    return "None"
  elseif v == vpoller.null then
    return ""
  elseif v == true then
    return "True"
  elseif v == false then
    return "False"
  elseif type(v) == "table" then
    v = vpoller.json.python(v)
  end
  v = tostring(v)
  if v:find('[,"\r\n]') then
    v = '"' .. v:gsub('"', '""') .. '"'
  end
  return v
end

return {
  api = 1,
  name = "vpoller.helpers.csvhelper",
  description = "CSV output of a list result",
  run = function(reply, req)
    if reply.success ~= 0 then
      return vpoller.json.python(reply, 4)
    end
    local rows = reply.result or {}
    if #rows == 0 then
      return ""
    end
    local header = {}
    for k in pairs(rows[1]) do
      header[#header + 1] = k
    end
    table.sort(header)
    local lines = { table.concat(header, ",") }
    for _, row in ipairs(rows) do
      local cells = {}
      for i, k in ipairs(header) do
        cells[i] = cell(row[k])
      end
      lines[#lines + 1] = table.concat(cells, ",")
    end
    return table.concat(lines, "\r\n") .. "\r\n"
  end,
}
