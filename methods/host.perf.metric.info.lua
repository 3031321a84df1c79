return require("vpoller.perf").info_method("host.perf.metric.info", "HostSystem", nil)
