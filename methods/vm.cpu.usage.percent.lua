local inventory = require("vpoller.inventory")

-- CPU usage in percent of the VM's vCPUs: overallCpuUsage (MHz) over
-- numCPU times the host CPU's clock (MHz). vPoller's formula mixed 2^20 with
-- Hz and multiplied cores per socket by numCPU; this one does not.
return {
  api = 1,
  name = "vm.cpu.usage.percent",
  description = "Get the CPU usage of a VirtualMachine in percent",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "VirtualMachine", req.name, {
      "runtime.host", "summary.quickStats.overallCpuUsage", "config.hardware.numCPU",
    })
    if not row then
      return nil, err
    end
    local usage, cpus, host = row["summary.quickStats.overallCpuUsage"], row["config.hardware.numCPU"], row["runtime.host"]
    local hz = host and ctx:get(host, { "hardware.cpuInfo.hz" })[1]["hardware.cpuInfo.hz"]
    if not (usage and cpus and hz and cpus > 0 and hz > 0) then
      return nil, "Unable to retrieve required properties"
    end
    local percent = usage / (cpus * hz / 1e6) * 100
    return { { name = row.name, ["vm.cpu.usage.percent"] = percent } }, "Successfully retrieved properties"
  end,
}
