#!/usr/bin/env bash
# Records a 10,000-VM RetrievePropertiesEx response (3 properties) from a
# simulator with curl, then times vpoller's decoder on it against
# serde_json parsing the same rows (bench/decode.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/vcsim/build.sh
cargo build --release --quiet --example decode
work=$(mktemp -d)
coproc SIM { exec target/vcsim/vcsim -stdinexit -standalone 1 -cluster 1 -host 2 -vm 5000 2>/dev/null; }
trap 'kill $SIM_PID 2>/dev/null; rm -rf "$work"' EXIT
read -r url <&"${SIM[0]}"
start='<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
end='</soapenv:Body></soapenv:Envelope>'
post() { curl -s -b "$work/jar" -c "$work/jar" -H 'Content-Type: text/xml' --data-binary "$start$1$end" "$url"; }
post '<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>user</userName><password>pass</password></Login>' >/dev/null
view=$(post '<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this><container type="Folder">group-d1</container><type>VirtualMachine</type><recursive>true</recursive></CreateContainerView>' | grep -o 'session\[[^<]*')
paths='<pathSet>name</pathSet><pathSet>runtime.powerState</pathSet><pathSet>summary.quickStats.overallCpuUsage</pathSet>'
post "<RetrievePropertiesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">propertyCollector</_this><specSet><propSet><type>VirtualMachine</type>$paths</propSet><objectSet><obj type=\"ContainerView\">$view</obj><skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><type>ContainerView</type><path>view</path></selectSet></objectSet></specSet><options/></RetrievePropertiesEx>" > "$work/rpex.xml"
target/release/examples/decode "$work/rpex.xml" "${1:-10}"
