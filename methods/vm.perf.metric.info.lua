return require("vpoller.perf").info_method("vm.perf.metric.info", "VirtualMachine", nil)
