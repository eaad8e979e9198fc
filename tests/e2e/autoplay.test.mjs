// A viewer without camera or microphone whose tab rejoined by itself (no click on the page):
// browsers block unmuted media that starts without a user activation (Chrome on a site the
// person has not used, Safari, Firefox). The page must notice and offer a "click to play"
// control that starts the remote tiles.
//
// Debian's headless Chromium lets MediaStream playback through whatever --autoplay-policy says
// (checked here with document-user-activation-required and user-gesture-required), so the
// viewer's page gets the policy as those browsers apply it: `autoplay` does nothing, and play()
// of unmuted media rejects with NotAllowedError until the person has pressed something on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, waitConnected, waitFor, joinCall } from './lib.mjs';

const env = serverAndBrowser();

function blockAutoplay() {
  // navigator.userActivation already reads true in a page opened over CDP, so the activation
  // is tracked here: a trusted pointer or key press on this document.
  let activated = false;
  for (const t of ['pointerdown', 'keydown']) addEventListener(t, (e) => { if (e.isTrusted) activated = true; }, true);
  Object.defineProperty(HTMLMediaElement.prototype, 'autoplay', { get() { return false; }, set() {}, configurable: true });
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    if (!this.muted && !activated) {
      return Promise.reject(new DOMException('play() can only be initiated by a user gesture', 'NotAllowedError'));
    }
    return play.call(this);
  };
}

test('blocked autoplay shows a click-to-play control that starts the remote video', { timeout: 120000 }, async () => {
  const room = 'autoplay' + Math.random().toString(16).slice(2, 10);
  const base = env.np.base.replace('127.0.0.1', 'localhost');
  const ann = await env.chrome.context.newPage();
  await joinCall(ann, `${base}/?room=${room}&name=Ann&relay=0`);
  const viewer = await env.chrome.context.newPage();
  // No camera, no microphone; a tab that rejoins by itself (a resume token in sessionStorage,
  // as after a reload or a restored session), so nobody clicked on this document.
  await viewer.addInitScript(blockAutoplay);
  await viewer.addInitScript((r) => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no devices', 'NotFoundError'));
    sessionStorage.setItem('natpass-resume-' + r, 'expired');
  }, room);
  await viewer.goto(`${base}/?room=${room}&relay=0`);
  await waitConnected(viewer, 1, { minFrames: 5, timeoutMs: 45000 });
  const annId = await ann.evaluate(() => window.natpass.me());
  const video = `[data-testid="tile-${annId}"] video`;
  assert.equal(await viewer.evaluate((sel) => document.querySelector(sel).paused, video), true, 'blocked until a click');
  const button = viewer.locator(`[data-testid="play-${annId}"]`);
  await button.waitFor({ state: 'visible', timeout: 10000 });
  await button.click();
  await waitFor('remote video playing', () => viewer.evaluate((sel) => !document.querySelector(sel).paused, video), 10000);
  // The control goes when play() has resolved, a moment after the element stops being paused.
  await waitFor('the control gone once playing', async () => (await button.count()) === 0, 5000, 50);
  await viewer.close();
  await ann.close();
});
