// A small TCP proxy standing in for the Envoy sidecar of a Consul Connect allocation (in its own
// container, in the group's network namespace): node tcp-proxy.mjs LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT [EXPOSE_PORT EXPOSE_PATH]
// With EXPOSE_PORT it also serves what Nomad's `expose` check path does through Envoy: GET EXPOSE_PATH
// on EXPOSE_PORT is relayed to the app (TARGET) as the same HTTP request.
import net from 'node:net';

const [host, port, targetHost, targetPort, exposePort] = process.argv.slice(2);
const relay = (client) => {
  const upstream = net.connect(Number(targetPort), targetHost);
  client.pipe(upstream).pipe(client);
  const end = () => { client.destroy(); upstream.destroy(); };
  client.on('error', end);
  upstream.on('error', end);
};
net.createServer(relay).listen(Number(port), host, () => process.stdout.write(`proxy ${host}:${port} -> ${targetHost}:${targetPort}\n`));
if (exposePort) net.createServer(relay).listen(Number(exposePort), host);
