import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { runtimeContract } from './contract.js';

// The fake runtime (failure knobs, after Nomad's mock driver) keeps the same contract as the real ones;
// its state lives in the object, so a second FakeRuntime has nothing to adopt.
runtimeContract('fake', async () => {
  const runtime = new FakeRuntime();
  return {
    runtime,
    slow: {
      slowDown: (ms) => {
        runtime.knobs.pauseMs = ms;
        runtime.knobs.resumeMs = ms;
      },
      answeredAll: () => runtime.state !== 'transitioning',
    },
  };
}, { adopts: false });
