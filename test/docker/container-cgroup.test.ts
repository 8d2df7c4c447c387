import test from 'ava';
import { cgroupDirectory, parseProcCgroup } from '../../agent/docker/container-cgroup.js';
import { dockerSocket } from '../../agent/docker/docker-socket.js';

const ID = '79aab72812b894ebb0e16242026d0106521b311fa462e5ec14199b06c838f196';

test('/proc/PID/cgroup of a container: cgroupfs and systemd drivers, cgroup v1 (freezer line) and v2 (0:: line)', (t) => {
  // As read on this machine (Docker 20.10, cgroupfs, cgroup v1: a 0:: line for the empty unified hierarchy too).
  const v1cgroupfs = `9:name=systemd:/docker/${ID}\n6:freezer:/docker/${ID}\n4:memory:/docker/${ID}\n0::/docker/${ID}\n`;
  t.deepEqual(parseProcCgroup(v1cgroupfs), { version: 1, relative: `/docker/${ID}` });
  t.deepEqual(cgroupDirectory('/sys/fs/cgroup', parseProcCgroup(v1cgroupfs)!), { version: 1, path: `/sys/fs/cgroup/freezer/docker/${ID}`, controlFile: `/sys/fs/cgroup/freezer/docker/${ID}/freezer.state` });
  const v1systemd = `7:freezer:/system.slice/docker-${ID}.scope\n1:name=systemd:/system.slice/docker-${ID}.scope\n`;
  t.deepEqual(parseProcCgroup(v1systemd), { version: 1, relative: `/system.slice/docker-${ID}.scope` });
  const v2systemd = `0::/system.slice/docker-${ID}.scope\n`;
  t.deepEqual(cgroupDirectory('/sys/fs/cgroup', parseProcCgroup(v2systemd)!), { version: 2, path: `/sys/fs/cgroup/system.slice/docker-${ID}.scope`, controlFile: `/sys/fs/cgroup/system.slice/docker-${ID}.scope/cgroup.freeze` });
  t.deepEqual(parseProcCgroup(`0::/docker/${ID}\n`), { version: 2, relative: `/docker/${ID}` });
  t.is(parseProcCgroup('garbage\n'), undefined);
});

test('the engine socket: docker.socket, else DOCKER_HOST (unix:// only), else /var/run/docker.sock', (t) => {
  t.is(dockerSocket('/run/d.sock', { DOCKER_HOST: 'unix:///other.sock' }), '/run/d.sock');
  t.is(dockerSocket(undefined, { DOCKER_HOST: 'unix:///run/user/0/docker.sock' }), '/run/user/0/docker.sock');
  t.is(dockerSocket(undefined, {}), '/var/run/docker.sock');
  t.throws(() => dockerSocket(undefined, { DOCKER_HOST: 'tcp://10.0.0.1:2375' }), { message: /DOCKER_HOST="tcp:\/\/10\.0\.0\.1:2375": .*local unix socket only/ });
});
