return require("vpoller.perf").info_method("datacenter.perf.metric.info", "Datacenter", nil)
