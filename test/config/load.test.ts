import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';

const instance = { id: 'web', address: '10.200.0.2:8080', interface: 'dz-web-h', runtime: { kind: 'freezer', cgroup: 'doze/web' } };

test('the minimal static config from the README is valid and gets defaults', (t) => {
  const config = parseConfig({ instances: [instance] });
  t.is(config.listen, '127.0.0.1:7070');
  t.is(config.healthChecks.mark, 1);
  t.is(config.instances[0]!.idleTimeout, 500);
  t.is(config.instances[0]!.idlePolicy, 'requests');
  t.is(config.instances[0]!.wake, undefined, 'unset: the runtime decides (hold where it drops the first SYN)');
  t.is(config.instances[0]!.busyCpu, 0.1);
});

test('flags override env, which overrides the file', (t) => {
  const config = parseConfig({ listen: '127.0.0.1:1', token: 'file' }, [{ listen: '127.0.0.1:2', token: 'env' }, { listen: '127.0.0.1:3' }]);
  t.is(config.listen, '127.0.0.1:3');
  t.is(config.token, 'env');
});

test('every problem is listed with its field and value', (t) => {
  const error = t.throws(() =>
    parseConfig({ listen: 'nowhere', instances: [{ ...instance, idlePolicy: 'sometimes', idleTimeout: 'soon' }] }),
  );
  t.regex(error.message, /listen: expected "host:port" \(got "nowhere"\)/);
  t.regex(error.message, /instances\[0\]\.idlePolicy: .*\(got "sometimes"\)/);
  t.regex(error.message, /instances\[0\]\.idleTimeout: "soon" is not a duration/);
});

test('two instances cannot share an address (the maps key by IPv4)', (t) => {
  const error = t.throws(() => parseConfig({ instances: [instance, { ...instance, id: 'api', address: '10.200.0.2:9090' }] }));
  t.regex(error.message, /instances\[1\]\.address: 10\.200\.0\.2 is already used by instance "web"/);
});

test('maxAwake below the idle timeout is refused', (t) => {
  const error = t.throws(() => parseConfig({ instances: [{ ...instance, idleTimeout: '2s', maxAwake: '1s' }] }));
  t.regex(error.message, /maxAwake: must be at least idleTimeout/);
});

test('a top level that is not an object is refused', (t) => {
  t.throws(() => parseConfig([]), { message: /expected a JSON object/ });
});

test('IPv6 addresses are written in brackets, for address, addresses and checkAddresses; a bare or malformed one is refused with the form', (t) => {
  const config = parseConfig({ instances: [{ ...instance, addresses: ['[fd00::2]:8080'], checkAddresses: ['[fd00::1]:28080'] }] });
  t.deepEqual(config.instances[0]!.addresses, ['[fd00::2]:8080']);
  t.is(parseConfig({ instances: [{ ...instance, address: '[fd00::2]:8080' }] }).instances[0]!.address, '[fd00::2]:8080');
  const error = t.throws(() => parseConfig({ instances: [{ ...instance, addresses: ['fd00::2:8080', '[fd00::zz]:80'] }] }));
  t.regex(error.message, /instances\[0\]\.addresses\[0\]: expected "IPv4:port" or "\[IPv6\]:port"/);
  t.regex(error.message, /instances\[0\]\.addresses\[1\]: expected "IPv4:port" or "\[IPv6\]:port"/);
});

test('two instances cannot share an IPv6 address either', (t) => {
  const error = t.throws(() =>
    parseConfig({ instances: [{ ...instance, addresses: ['[fd00::2]:8080'] }, { ...instance, id: 'api', address: '10.200.0.3:8080', addresses: ['[fd00::2]:9090'] }] }),
  );
  t.regex(error.message, /instances\[1\]\.addresses\[0\]: fd00::2 is already used by instance "web"/);
});

test('observers are addresses or CIDRs of either family; anything else is refused with the form', (t) => {
  t.deepEqual(parseConfig({ observers: { fromSources: ['10.0.5.20', '10.0.9.0/24', 'fd00:5::/64'] }, instances: [instance] }).observers.fromSources, ['10.0.5.20', '10.0.9.0/24', 'fd00:5::/64']);
  const error = t.throws(() => parseConfig({ observers: { fromSources: ['prometheus.example', '10.0.0.0/33'] }, instances: [instance] }));
  t.regex(error.message, /observers\.fromSources\[0\]: expected an IPv4 or IPv6 address or CIDR/);
  t.regex(error.message, /observers\.fromSources\[1\]: expected an IPv4 or IPv6 address or CIDR/);
});

test('observers get their own mark bit: one shared with healthChecks.mark is refused, naming both', (t) => {
  t.is(parseConfig({ observers: { fromSources: ['10.0.5.20/32'] }, instances: [instance] }).observers.mark, 4);
  const error = t.throws(() => parseConfig({ healthChecks: { mark: '0x5' }, observers: { fromSources: ['10.0.5.20/32'] }, instances: [instance] }));
  t.regex(error.message, /observers\.mark: shares bits with healthChecks\.mark \(0x5\): give observers their own bit/);
});
