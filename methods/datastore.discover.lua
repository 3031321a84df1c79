return require("vpoller.inventory").discover_method(
  "datastore.discover", "Datastore", "Discover all Datastore managed objects")
