return require("vpoller.perf").get_method("vm.perf.metric.get", "VirtualMachine", nil, { label = "VM" })
