-- about: attributes of the vSphere host's AboutInfo (no property collector).
return {
  api = 1,
  name = "about",
  description = "Get the 'about' information of the vSphere host",
  run = function(ctx, req)
    local about = ctx:about()
    local row = {}
    for _, p in ipairs(req.properties or { "fullName" }) do
      local v = about[p]
      if v == nil then v = "(null)" end
      row[p] = v
    end
    return { row }, "Successfully retrieved properties"
  end,
}
