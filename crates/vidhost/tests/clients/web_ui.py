"""The web UI in a real browser (headless Chromium, driven by Playwright).

    python3 web_ui.py BASE_URL VIDEO_FILE BIG_FILE ADMIN_EMAIL PASSWORD

Walks a new user's way through the UI as a person would: registers, uploads
VIDEO_FILE by drag and drop's file input, waits in the library for the live
status to reach `ready`, plays the video in the watch page's adaptive player
(hls.js on a <video> element), switches quality, scrubs over the storyboard,
finds the video by searching the home page, enrols an authenticator (QR
code) on the account page, and signs in again with the TOTP step. Then it
pauses an upload of BIG_FILE, reloads the page, picks the file again and
checks that the upload resumes where it stopped and completes as the same
video. Finally the admin page, as the admin. Prints one JSON line of what
it saw; any failed expectation raises (exit status 1).
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, VIDEO, BIG, ADMIN_EMAIL, PASSWORD = sys.argv[1:6]
CHROMIUM = os.environ.get("VIDHOST_TEST_CHROMIUM", "/usr/bin/chromium")


def totp(secret_b32, at=None):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    step = int((at or time.time()) // 30)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def api(path, token=None):
    req = urllib.request.Request(BASE + path)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_js(page, expr, timeout=30):
    """Polls `expr` in the page until it is truthy (Playwright's own
    wait_for_function evaluates strings, which the UI's CSP forbids)."""
    deadline = time.time() + timeout
    while not page.evaluate(expr):
        assert time.time() < deadline, "timed out waiting for " + expr
        time.sleep(0.1)


def token_of(page):
    return page.evaluate("JSON.parse(localStorage.getItem('vidhost.auth')).access_token")


def main():
    seen = {}
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        ctx = browser.new_context()
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security" in m.text else None)

        # Register: signed in straight after, on the library page.
        email = "ui-%d@example.com" % int(time.time() * 1000)
        page.goto(BASE + "/register")
        page.fill("input[name=email]", email)
        page.fill("input[name=display_name]", "UI Tester")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(BASE + "/library")
        expect(page.locator("#nav-account")).to_have_text("UI Tester")
        expect(page.locator("#library")).to_contain_text("No videos yet")

        # Upload through the upload page (tus, in chunks, with progress).
        page.goto(BASE + "/upload")
        page.set_input_files("#file-input", VIDEO)
        item = page.locator(".upload-item").first
        expect(item.locator(".ok")).to_have_text("Uploaded.", timeout=60_000)
        watch_href = item.locator("a", has_text="watch").get_attribute("href")
        video_id = watch_href.rsplit("/", 1)[1]
        seen["video_id"] = video_id

        # The library follows processing live (SSE) until ready.
        page.goto(BASE + "/library")
        row = page.locator("tr[data-video-id='%s']" % video_id)
        expect(row).to_be_visible()
        expect(row.locator("[data-status]")).to_have_attribute("data-status", "ready", timeout=180_000)
        # Uploads take the server's default visibility (private): the home
        # page, public videos only, does not show it, even to its owner.
        page.goto(BASE + "/")
        expect(page.locator("#videos")).to_be_visible()
        assert page.locator(".card[data-video-id='%s']" % video_id).count() == 0
        # Edit the metadata and make the video public from the library.
        page.goto(BASE + "/library")
        row = page.locator("tr[data-video-id='%s']" % video_id)
        title = "Sunset over the test pattern %d" % int(time.time())
        row.locator("input[aria-label=Title]").fill(title)
        row.locator("summary").click()
        row.locator("textarea[aria-label=Description]").fill("Colour bars at dusk.")
        row.locator("input[aria-label=Tags]").fill("bars, dusk")
        row.locator("select[aria-label=Visibility]").select_option("public")
        row.locator("button", has_text="Save").click()
        expect(row.locator(".ok")).to_have_text("saved")
        v = api("/api/v1/videos/" + video_id, token_of(page))
        assert v["title"] == title and v["visibility"] == "public", v
        assert v["description"] == "Colour bars at dusk." and v["tags"] == ["bars", "dusk"], v

        # Watch: hls.js plays the HLS ladder in the <video> element.
        page.goto(BASE + watch_href)
        expect(page.locator("#title")).to_have_text(title)
        quality = page.locator("#quality")
        expect(quality).to_be_visible()
        levels = quality.locator("option").all_inner_texts()
        assert levels[0] == "Auto" and len(levels) >= 2, levels
        page.evaluate("document.getElementById('player').muted = true")
        page.evaluate("document.getElementById('player').play()")
        wait_js(page, "document.getElementById('player').currentTime > 0.5")
        src = page.evaluate("document.getElementById('player').currentSrc")
        assert src.startswith("blob:"), "played through MediaSource (hls.js): " + src
        quality.select_option(index=1)
        wait_js(page, "document.getElementById('player').readyState >= 2")
        seen["levels"] = levels
        # Storyboard: hovering the scrub bar shows a sprite tile.
        scrub = page.locator("#scrub")
        box = scrub.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        preview = page.locator("#storyboard-preview")
        expect(preview).to_be_visible()
        bg = preview.evaluate("e => e.style.backgroundImage")
        assert "/play/" in bg, bg

        # Home: the public video is in the grid, and search finds it.
        page.goto(BASE + "/")
        page.fill("input[name=q]", "sunset")
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**/?q=sunset*")
        assert "sort=relevance" in page.url, "a search sorts by relevance: " + page.url
        card = page.locator(".card[data-video-id='%s']" % video_id)
        expect(card).to_be_visible()
        thumb = card.locator(".thumb").evaluate("e => e.style.backgroundImage")
        assert "/play/" in thumb, "the card shows the poster: " + thumb
        page.fill("input[name=q]", "no-such-words-anywhere")
        page.press("input[name=q]", "Enter")
        expect(page.locator("#videos")).to_contain_text("No videos match")

        # Account: enrol an authenticator from the QR code page.
        page.goto(BASE + "/account")
        page.click("#mfa-setup")
        expect(page.locator("#mfa-qr img")).to_be_visible()
        secret = page.locator("#mfa-secret").inner_text()
        page.fill("#mfa input[name=code]", totp(secret))
        page.click("#mfa button:has-text('Turn on')")
        expect(page.locator("#recovery-codes li").first).to_be_visible()
        assert page.locator("#recovery-codes li").count() >= 5
        # Sign out and in again: the TOTP step appears.
        page.click("#logout")
        page.wait_for_url(BASE + "/")
        page.goto(BASE + "/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        totp_field = page.locator("input[name=totp_code]")
        expect(totp_field).to_be_visible()
        # The code used to enrol is spent: wait for the next step's code.
        time.sleep(30 - time.time() % 30 + 1)
        totp_field.fill(totp(secret))
        page.click("button[type=submit]")
        page.wait_for_url(BASE + "/library")

        # Pause a big upload, reload the page, pick the file again: it resumes.
        page.goto(BASE + "/upload")
        page.route("**/api/v1/tus/*", lambda route: (time.sleep(0.3), route.continue_())[1])
        page.set_input_files("#file-input", BIG)
        item = page.locator(".upload-item").first
        pause = item.locator("button", has_text="Pause")
        # Paused once the first 8 MiB chunk is in (the file is 40 MiB).
        wait_js(page, "document.querySelector('.upload-item progress').value >= 0.2")
        pause.click()
        expect(item.locator("button", has_text="Resume")).to_be_visible()
        saved = page.evaluate("Object.values(JSON.parse(localStorage.getItem('vidhost.tus')))")
        assert len(saved) == 1, saved
        big_id = saved[0]["video_id"]
        uploads = api("/api/v1/uploads", token_of(page))["items"]
        before = [u for u in uploads if u["video_id"] == big_id][0]["received_bytes"]
        page.unroute("**/api/v1/tus/*")
        page.reload()
        expect(page.locator("#interrupted")).to_contain_text(os.path.basename(BIG))
        page.set_input_files("#file-input", BIG)
        item = page.locator(".upload-item").first
        expect(item.locator(".ok")).to_have_text("Uploaded.", timeout=120_000)
        href = item.locator("a", has_text="watch").get_attribute("href")
        assert href.endswith("/" + big_id), (href, big_id)
        assert page.evaluate("localStorage.getItem('vidhost.tus')") == "{}"
        assert 8 << 20 <= before < os.path.getsize(BIG), before
        seen["resumed_from"] = before
        v = api("/api/v1/videos/" + big_id, token_of(page))
        assert v["status"] != "awaiting_upload" and v["size_bytes"] == os.path.getsize(BIG), v

        # Admin page: users, jobs, audit, live charts.
        page.click("#logout")
        page.goto(BASE + "/login")
        page.fill("input[name=email]", ADMIN_EMAIL)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(BASE + "/library")
        page.goto(BASE + "/admin")
        expect(page.locator("#admin-users")).to_contain_text(email)
        page.click("button[data-tab='Audit log']")
        expect(page.locator("#admin-audit")).to_contain_text("mfa")
        expect(page.locator("#charts canvas")).to_have_count(5)

        browser.close()
    assert not errors, errors
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
