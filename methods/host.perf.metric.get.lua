return require("vpoller.perf").get_method("host.perf.metric.get", "HostSystem", nil, { label = "Host" })
