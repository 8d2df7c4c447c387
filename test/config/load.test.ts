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
