return require("vpoller.alarms").method("vm.alarm.get", "VirtualMachine", nil)
