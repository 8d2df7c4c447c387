import test from 'ava';
import { ConfigError, DeadlineError, DozeError, RuntimeError, UpstreamError, upstreamErrorClass } from '../../agent/shared/errors.js';

// A failing test's error is serialised by ava's TAP reporter, which crashed the whole run (every
// later result lost) on an error with an own property set to undefined.
test('no doze error has an own property that is undefined: a cause or status not given is left out', (t) => {
  const NomadLike = upstreamErrorClass<'E_NOMAD_HTTP'>('NomadError');
  const errors = [
    new DozeError('E_CONFIG', 'a'),
    new DozeError('E_CONFIG', 'b', { cause: undefined }),
    new ConfigError('c'),
    new RuntimeError('E_RUNTIME_IO', 'd'),
    new UpstreamError('E_NOMAD_HTTP', 'e'),
    new NomadLike('E_NOMAD_HTTP', 'f', {}),
    new DeadlineError('g', 10),
  ];
  for (const error of errors) {
    t.deepEqual(Object.entries(error).filter(([, value]) => value === undefined), [], `${error.name}: ${error.message}`);
    t.false(Object.hasOwn(error, 'cause'), `${error.name} has no cause property without a cause`);
  }
  const withBoth = new UpstreamError('E_NOMAD_HTTP', 'h', { status: 503, cause: new Error('down') });
  t.is(withBoth.status, 503);
  t.is((withBoth.cause as Error).message, 'down');
});
