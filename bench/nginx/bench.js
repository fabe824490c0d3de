// Picks the streamed or the plain fixture by the request body's "stream" field, as a real
// provider does. nginx alone cannot branch on the body: rewrite-phase `if` runs before the
// body is read, whereas js_content reads it first.

function wantsStream(r) {
    try {
        return JSON.parse(r.requestText).stream === true;
    } catch (e) {
        return false;
    }
}

function hasKey(r) {
    var h = r.headersIn;
    return Boolean(h['Authorization'] || h['x-api-key']);
}

// A Bearer key named like "test-openrouter-cool-7" is rate limited for an hour (429 with
// retry-after: 3600), so the scaling benchmark can have a chosen share of keys cooling.
function cooling(r) {
    var auth = r.headersIn['Authorization'];
    return Boolean(auth) && auth.indexOf('-cool-') !== -1;
}

function answer(r, dialect) {
    if (!hasKey(r)) {
        r.internalRedirect('@' + dialect + '_401');
        return;
    }
    if (dialect === 'openai' && cooling(r)) {
        r.internalRedirect('@openai_429');
        return;
    }
    r.internalRedirect('@' + dialect + (wantsStream(r) ? '_stream' : '_json'));
}

function openai(r) {
    answer(r, 'openai');
}

function anthropic(r) {
    answer(r, 'anthropic');
}

export default { openai, anthropic };
