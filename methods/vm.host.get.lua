local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "vm.host.get",
  description = "Get the HostSystem a VirtualMachine runs on",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "VirtualMachine", req.name, { "runtime.host" })
    if not row then
      return nil, err
    end
    local host = row["runtime.host"] and ctx:get(row["runtime.host"], { "name" })[1]
    return { { name = row.name, host = host and host.name } }, "Successfully retrieved object properties"
  end,
}
