import test from 'ava';
import * as agentConfig from '../../agent/config/schema.js';
import { checkMetaLayer, IDLE_POLICIES, META_KEYS, resolveDozeMeta, WAKE_MODES, type MetaLayer } from '../../agent/nomad/meta-keys.js';

const layers = (job: Record<string, string> | null, group: Record<string, string> | null, task: Record<string, string> | null): MetaLayer[] => [
  { place: 'job "web"', meta: job },
  { place: 'group "web"', meta: group },
  { place: 'group "web" task "app"', meta: task },
];

test('defaults apply when nothing is set', (t) => {
  const { settings, problems } = resolveDozeMeta(layers(null, null, null));
  t.deepEqual(problems, []);
  t.deepEqual(settings, {
    enabled: false,
    idleTimeoutMs: 300_000,
    idlePolicy: 'requests',
    mode: 'pause',
    reclaim: true,
    reclaimFreezer: false,
    reclaimAfterMs: 10_000,
    reclaimKeep: 'working-set',
    wake: undefined,
    minAwakeMs: 0,
    busyCpu: 0.1,
    dryRun: false,
    maxAwakeMs: undefined,
    maxSleepMs: undefined,
    tapAddress: undefined,
    metricsPath: '/metrics',
  });
});

test('task meta wins over group meta, which wins over job meta', (t) => {
  const { settings, problems } = resolveDozeMeta(
    layers(
      { 'doze.enabled': 'true', 'doze.idle_timeout': '1m', 'doze.mode': 'snapshot', 'doze.wake': 'hold' },
      { 'doze.idle_timeout': '30s', 'doze.mode': 'scale' },
      { 'doze.idle_timeout': '500ms' },
    ),
  );
  t.deepEqual(problems, []);
  t.true(settings.enabled); // job
  t.is(settings.mode, 'scale'); // group over job
  t.is(settings.idleTimeoutMs, 500); // task over group and job
  t.is(settings.wake, 'hold'); // job, unset below
});

test('doze.reclaim is on by default and a narrower level can turn it off', (t) => {
  t.true(resolveDozeMeta(layers({ 'doze.enabled': 'true' }, null, null)).settings.reclaim);
  const { settings, problems } = resolveDozeMeta(layers({ 'doze.enabled': 'true', 'doze.reclaim': 'true' }, null, { 'doze.reclaim': 'false' }));
  t.deepEqual(problems, []);
  t.false(settings.reclaim);
  t.deepEqual(resolveDozeMeta(layers(null, { 'doze.reclaim': 'sometimes' }, null)).problems, ['group "web": doze.reclaim: "sometimes" is not a boolean (use "true" or "false")']);
});

test('a narrower level can switch doze off', (t) => {
  t.false(resolveDozeMeta(layers({ 'doze.enabled': 'true' }, null, { 'doze.enabled': 'false' })).settings.enabled);
  t.true(resolveDozeMeta(layers(null, null, { 'doze.enabled': 'True' })).settings.enabled);
});

test('errors name the place, the key and the value', (t) => {
  const cases: [MetaLayer[], string][] = [
    [layers(null, { 'doze.idle_timeout': '5 parsecs' }, null), 'group "web": doze.idle_timeout: "5 parsecs" is not a duration (use e.g. "500ms", "30s", "5m", "1h")'],
    [layers({ 'doze.idle_policy': 'vibes' }, null, null), 'job "web": doze.idle_policy: "vibes" is not one of requests, connections, traffic'],
    [layers(null, null, { 'doze.mode': 'hibernate' }), 'group "web" task "app": doze.mode: "hibernate" is not one of snapshot, pause, scale'],
    [layers(null, { 'doze.wake': 'soon' }, null), 'group "web": doze.wake: "soon" is not one of retry, hold'],
    [layers({ 'doze.enabled': 'yes' }, null, null), 'job "web": doze.enabled: "yes" is not a boolean (use "true" or "false")'],
    [layers(null, { 'doze.min_awake': '-1s' }, null), 'group "web": doze.min_awake: "-1s" is not a duration (use e.g. "500ms", "30s", "5m", "1h")'],
    [layers(null, { 'doze.busy_cpu': '-0.5' }, null), 'group "web": doze.busy_cpu: "-0.5" is not a number of at least 0 (e.g. "0.1")'],
    [layers(null, { 'doze.busy_cpu': 'lots' }, null), 'group "web": doze.busy_cpu: "lots" is not a number of at least 0 (e.g. "0.1")'],
    [layers(null, { 'doze.max_sleep': '' }, null), 'group "web": doze.max_sleep: "" is not a duration (use e.g. "500ms", "30s", "5m", "1h")'],
    [layers(null, { 'doze.idle_timout': '5m' }, null), 'group "web": doze.idle_timout: unknown doze meta key (did you mean doze.idle_timeout?)'],
    [layers(null, { 'doze.idle_timeout': '1m', 'doze.max_awake': '10s' }, null), 'group "web": doze.max_awake: "10s" is shorter than doze.idle_timeout (1m0s)'],
    [layers(null, { 'doze.idle_timeout': '0s' }, null), 'group "web": doze.idle_timeout: "0s" must be longer than 0'],
  ];
  for (const [input, message] of cases) t.deepEqual(resolveDozeMeta(input).problems, [message]);
});

test('an invalid value is reported even where a narrower level overrides it', (t) => {
  const { problems, settings } = resolveDozeMeta(layers({ 'doze.idle_timeout': 'soon' }, null, { 'doze.idle_timeout': '10s' }));
  t.deepEqual(problems, ['job "web": doze.idle_timeout: "soon" is not a duration (use e.g. "500ms", "30s", "5m", "1h")']);
  t.is(settings.idleTimeoutMs, 10_000);
});

test('an unknown key far from any declared one lists the known keys', (t) => {
  const [problem] = checkMetaLayer({ place: 'job "x"', meta: { 'doze.colour': 'blue' } });
  t.regex(problem!, /^job "x": doze.colour: unknown doze meta key \(known: doze.enabled, doze.idle_timeout, .*doze.max_sleep, doze.dry_run\)$/);
});

test('meta outside the doze. prefix is not doze\'s business', (t) => {
  t.deepEqual(checkMetaLayer({ place: 'job "x"', meta: { owner: 'team-a', 'dozer.enabled': 'yes' } }), []);
});

test('every declared key has a type, a description and a valid default', (t) => {
  for (const decl of META_KEYS) {
    t.regex(decl.key, /^doze\.[a-z_]+$/);
    t.true(decl.description.length > 20, decl.key);
    if (decl.default !== undefined) t.deepEqual(checkMetaLayer({ place: 'default', meta: { [decl.key]: decl.default } }), [], decl.key);
  }
  t.deepEqual(META_KEYS.map((d) => d.key), ['doze.enabled', 'doze.idle_timeout', 'doze.idle_policy', 'doze.mode', 'doze.reclaim', 'doze.reclaim_after', 'doze.reclaim_keep', 'doze.tap_address', 'doze.wake', 'doze.min_awake', 'doze.max_awake', 'doze.busy_cpu', 'doze.metrics_path', 'doze.max_sleep', 'doze.dry_run']);
});

test('idle policies and wake modes are the ones the agent config accepts', (t) => {
  // If the agent's config drops or renames one, Nomad annotations would stop mapping onto it.
  const config = agentConfig as Record<string, unknown>;
  t.deepEqual([...IDLE_POLICIES], [...(config.IDLE_POLICIES as readonly string[])]);
  t.deepEqual([...WAKE_MODES], [...(config.WAKE_MODES as readonly string[])]);
});

test('doze.reclaim turns on freezer reclaim for a non-VM task only when written; doze.reclaim_after sets when', (t) => {
  t.false(resolveDozeMeta(layers({ 'doze.enabled': 'true' }, null, null)).settings.reclaimFreezer);
  const { settings } = resolveDozeMeta(layers(null, { 'doze.enabled': 'true', 'doze.reclaim': 'true', 'doze.reclaim_after': '30s' }, null));
  t.true(settings.reclaimFreezer);
  t.is(settings.reclaimAfterMs, 30_000);
  t.is(settings.reclaimKeep, 'working-set', 'the working set stays by default');
  const keepNothing = resolveDozeMeta(layers(null, { 'doze.enabled': 'true', 'doze.reclaim': 'true', 'doze.reclaim_keep': 'nothing' }, null));
  t.is(keepNothing.settings.reclaimKeep, 'nothing');
});
