// Drives vidhost with tus-js-client (the client Uppy uses), under Node.
//
// usage: node tus_js_client.mjs ENDPOINT TOKEN FILE interrupt
//        node tus_js_client.mjs ENDPOINT TOKEN FILE resume UPLOAD_URL
//
// interrupt: uploads in 64 KiB chunks and aborts once past half the file.
// resume:    a fresh Upload instance given the upload URL asks the server for
//            its offset (HEAD) and sends the rest.
// Prints one JSON line: {"url": ..., "first_progress": ...}
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, token, path, mode, uploadUrl] = process.argv.slice(2);
const file = fs.readFileSync(path);
const size = file.length;
const common = {
  headers: { Authorization: `Bearer ${token}` },
  chunkSize: 64 * 1024,
  retryDelays: [],
};

function run(options, stopAtHalf) {
  return new Promise((resolve, reject) => {
    let firstProgress;
    let stopped = false;
    const upload = new tus.Upload(file, {
      ...common,
      ...options,
      onProgress(sent) {
        if (firstProgress === undefined) firstProgress = sent;
        if (stopAtHalf && !stopped && sent >= size / 2) {
          stopped = true;
          const url = upload.url;
          upload.abort().then(() => resolve({ url, first_progress: firstProgress }), reject);
        }
      },
      onError: reject,
      onSuccess: () =>
        stopAtHalf ? reject(new Error('finished before it could be interrupted')) : resolve({ url: upload.url, first_progress: firstProgress }),
    });
    upload.start();
  });
}

const result =
  mode === 'interrupt'
    ? await run(
        { endpoint, metadata: { filename: 'js.mp4', filetype: 'video/mp4', title: 'From tus-js-client', visibility: 'unlisted' } },
        true,
      )
    : await run({ uploadUrl }, false);
console.log(JSON.stringify(result));
