return require("vpoller.perf").get_method("datacenter.perf.metric.get", "Datacenter", nil, { needs_interval = true })
