return require("vpoller.alarms").method("cluster.alarm.get", "ClusterComputeResource", nil)
