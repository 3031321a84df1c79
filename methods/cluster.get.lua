return require("vpoller.inventory").get_method(
  "cluster.get", "ClusterComputeResource", "Get properties of a single ClusterComputeResource managed object")
