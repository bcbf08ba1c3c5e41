// `/delegator`: a page that asks `/delegator.json` and draws the delegation tree, for people
// debugging a dtab in a browser.

enum DelegatorPage {
    static func html(routers: [String]) -> String {
        let options = routers.map { "<option>\($0)</option>" }.joined()
        return """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>meshd delegator</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
        input, textarea, select { font: 13px monospace; }
        textarea { width: 40em; height: 5em; }
        ul.tree { list-style: none; padding-left: 1.2em; border-left: 1px solid #ccc; }
        .path { font-family: monospace; font-weight: 600; }
        .dentry { font-family: monospace; color: #666; margin-left: .6em; }
        .neg, .fail, .exception { color: #b00; } .leaf { color: #070; } .empty { color: #a60; }
        .kind { font-size: 11px; text-transform: uppercase; margin-right: .5em; }
        </style></head><body>
        <h1>Delegator</h1>
        <form id="form">
          <p>Router <select id="router">\(options)</select>
             Path <input id="path" value="/svc/" size="40">
             <button>Delegate</button></p>
          <p>Extra dentries (appended to the router's dtab, like <code>l5d-dtab</code>):<br>
             <textarea id="dtab" placeholder="/svc/web => /#/io.l5d.fs/web-v2"></textarea></p>
        </form>
        <div id="result"></div>
        <script>
        function render(node) {
          const li = document.createElement('li');
          li.className = node.type;
          const kind = document.createElement('span'); kind.className = 'kind'; kind.textContent = node.type; li.appendChild(kind);
          const path = document.createElement('span'); path.className = 'path'; path.textContent = node.path; li.appendChild(path);
          if (node.dentry) { const d = document.createElement('span'); d.className = 'dentry'; d.textContent = node.dentry.prefix + ' => ' + node.dentry.dst; li.appendChild(d); }
          const kids = node.delegate ? [node.delegate] : node.alt ? node.alt : node.union ? node.union.map(u => u.tree) : [];
          if (node.bound) { const b = document.createElement('div'); const a = node.bound.addr;
            b.textContent = 'bound ' + node.bound.id + (node.bound.path !== '/' ? ' residual ' + node.bound.path : '') + ': ' +
              (a.type === 'bound' ? (a.addrs.map(x => x.ip + ':' + x.port).join(', ') || 'no endpoints') : a.type);
            li.appendChild(b); }
          if (node.message) { const m = document.createElement('div'); m.textContent = node.message; li.appendChild(m); }
          if (kids.length) { const ul = document.createElement('ul'); ul.className = 'tree'; kids.forEach(k => ul.appendChild(render(k))); li.appendChild(ul); }
          return li;
        }
        document.getElementById('form').addEventListener('submit', async (event) => {
          event.preventDefault();
          const q = new URLSearchParams({ namespace: document.getElementById('router').value,
            path: document.getElementById('path').value, dtab: document.getElementById('dtab').value });
          const response = await fetch('/delegator.json?' + q);
          const out = document.getElementById('result');
          out.innerHTML = '';
          if (!response.ok) { out.textContent = await response.text(); return; }
          const ul = document.createElement('ul'); ul.className = 'tree'; ul.appendChild(render(await response.json())); out.appendChild(ul);
        });
        </script></body></html>
        """
    }
}
