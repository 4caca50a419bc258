//! `/builds/N`: a build's steps, results and durations, its source stamp
//! and changes, artifacts, and a log tail per step that follows while the
//! step runs (the page's one script).

use super::*;

/// The build page's script: while the build runs, long-poll the running
/// step's log from the byte offset the page has (`wait=1`: answered as
/// soon as there is more, or the step ended), then look at the build
/// again; show results as
/// they come. Text goes in through `textContent`, never as markup.
const BUILD_SCRIPT: &str = r#"(function(){
var el=document.getElementById('build');if(!el)return;
var api=el.getAttribute('data-api'),id=el.getAttribute('data-id'),dec={};
function step(s){var sec=document.getElementById('step-'+s.index);
if(!sec){sec=document.createElement('section');sec.id='step-'+s.index;
var h=document.createElement('h3');h.textContent=s.name+' ';var r=document.createElement('span');
r.id='result-'+s.index;h.appendChild(r);sec.appendChild(h);
var pre=document.createElement('pre');pre.id='log-'+s.index;pre.setAttribute('data-offset','0');
sec.appendChild(pre);document.getElementById('steps').appendChild(sec);}
var r=document.getElementById('result-'+s.index);var w=s.result||'running';
r.textContent=w;r.className='r '+w;return document.getElementById('log-'+s.index);}
function add(i,pre,b){if(!dec[i])dec[i]=new TextDecoder();
pre.setAttribute('data-offset',String(+pre.getAttribute('data-offset')+b.byteLength));
pre.appendChild(document.createTextNode(dec[i].decode(b,{stream:true})));pre.scrollTop=pre.scrollHeight;}
function grow(s,pre,wait){var off=+pre.getAttribute('data-offset');
if(!wait&&s.log_bytes<=off)return Promise.resolve();
return fetch(api+'/api/v1/builds/'+id+'/steps/'+s.index+'/log?offset='+off+(wait?'&wait=1':'')).then(function(r){
if(!r.ok)throw new Error('log: '+r.status);var done=r.headers.get('x-log-complete')==='true';return r.arrayBuffer().then(function(b){add(s.index,pre,new Uint8Array(b));
if(wait&&!done)return grow(s,pre,true);});});}
function poll(){fetch(api+'/api/v1/builds/'+id).then(function(r){return r.json();}).then(function(d){
var running=null,all=[];d.steps.forEach(function(s){var pre=step(s);
if(s.result===null&&!d.result)running=[s,pre];else all.push(grow(s,pre,false));});
return Promise.all(all).then(function(){var r=document.getElementById('result');var w=d.result||'running';
r.textContent=w;r.className='r '+w;
if(d.result){var f=document.getElementById('stop');if(f)f.remove();el.setAttribute('data-done','1');}
else if(running)grow(running[0],running[1],true).then(poll,function(){setTimeout(poll,3000);});
else setTimeout(poll,1000);});
}).catch(function(){setTimeout(poll,3000);});}
if(el.getAttribute('data-done')!=='1')poll();
})();"#;

/// `GET /builds/N`: steps with results and durations, artifacts, and the
/// tail of each step's log, followed live while the build runs; with
/// `Accept: text/event-stream`, the build's events.
pub async fn build(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if events::wants_stream(&headers) {
        let known = match (who(&web, &headers), parse_id(&id, "build")) {
            (Ok(who), Ok(id)) => build_of(&web, &who, id).await.map(|_| id),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        return match known {
            Ok(id) => page_stream(&web, &headers, Topic::Build(id)).await,
            Err(e) => e.into_response(),
        };
    }
    render(&web, async {
        let who = who(&web, &headers)?;
        let id = parse_id(&id, "build")?;
        let b = build_of(&web, &who, id).await?;
        let s = &b.summary;
        let p = esc(&web.prefix);
        let done = s.result.is_some();
        let mut body = format!(
            "<div id=\"build\" data-id=\"{id}\" data-api=\"{p}\" data-done=\"{}\">\
             <p><span id=\"result\" class=\"r {w}\">{w}</span> builder \
             <a href=\"{p}/builders/{}\">{}</a> on {} · request r{} · started {}{}</p>",
            if done { "1" } else { "0" },
            url_segment(&s.builder),
            esc(&s.builder),
            esc(&s.worker),
            s.request_id,
            time(s.started_at_ms),
            s.finished_at_ms
                .map(|f| format!(" · took {}", duration(f.saturating_sub(s.started_at_ms))))
                .unwrap_or_default(),
            w = crate::daemon::web::html::result_word(s.result),
        );
        if let Some(reason) = &s.reason {
            let _ = write!(body, "<p>{}</p>", esc(reason));
        }
        if let Some(reason) = &b.request_reason {
            let _ = write!(body, "<p>Requested: {}</p>", esc(reason));
        }
        if let Some(src) = &s.source {
            let _ = write!(
                body,
                "<p id=\"source\">Source: {} <code>{}</code> at <code>{}</code>",
                esc(&src.repository),
                esc(&src.branch),
                esc(src.revision.as_deref().unwrap_or("the branch's head")),
            );
            if !src.changes.is_empty() {
                body.push_str(" · changes:");
                for c in &src.changes {
                    let _ = write!(body, " <a href=\"{p}/changes#change-{c}\">{c}</a>");
                }
            }
            body.push_str("</p>");
        }
        if !b.properties.is_empty() {
            body.push_str("<p>Properties: ");
            for (k, v) in &b.properties {
                let _ = write!(body, "<code>{}={}</code> ", esc(k), esc(v));
            }
            body.push_str("</p>");
        }
        if !done {
            let _ = write!(
                body,
                "<form id=\"stop\" class=\"inline\" method=\"post\" action=\"{p}/builds/{id}/stop\">\
                 <input type=\"password\" name=\"token\" placeholder=\"token\" autocomplete=\"off\" required>\
                 <button type=\"submit\">stop</button></form>"
            );
        }
        let _ = write!(
            body,
            "<form id=\"rebuild\" class=\"inline\" method=\"post\" action=\"{p}/builds/{id}/rebuild\">\
             <input type=\"password\" name=\"token\" placeholder=\"token\" autocomplete=\"off\" required>\
             <button type=\"submit\">rebuild</button></form>"
        );
        body.push_str(
            "<div class=\"wide\"><table><tr><th>step</th><th>result</th><th>started</th>\
             <th>took</th><th>why</th></tr>",
        );
        for st in &b.steps {
            let _ = write!(
                body,
                "<tr><td><a href=\"#step-{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                st.index,
                esc(&st.name),
                result_label(st.result),
                time(st.started_at_ms),
                st.finished_at_ms
                    .map(|f| duration(f.saturating_sub(st.started_at_ms)))
                    .unwrap_or_default(),
                esc(st.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table></div>");
        let artifacts = artifacts_of(&web, &who, id).await.unwrap_or_default();
        if !artifacts.is_empty() {
            body.push_str("<h2>Artifacts</h2><ul>");
            for a in &artifacts {
                let path: Vec<String> = a.name.split('/').map(url_segment).collect();
                let _ = write!(
                    body,
                    "<li><a href=\"{p}/api/v1/builds/{id}/artifacts/{}\">{}</a> <small>{} bytes, sha256 {}</small></li>",
                    path.join("/"),
                    esc(&a.name),
                    a.size,
                    esc(&a.sha256),
                );
            }
            body.push_str("</ul>");
        }
        body.push_str("<h2>Output</h2><div id=\"steps\">");
        for st in &b.steps {
            let path = step_log_path(&web.logs, id, st.index);
            let (start, tail) = tokio::task::spawn_blocking(move || {
                let len = log_len(&path);
                let start = len.saturating_sub(TAIL);
                (start, read_from(&path, start, TAIL as usize).unwrap_or_default())
            })
            .await
            .unwrap_or_default();
            let end = start + tail.len() as u64;
            let w = crate::daemon::web::html::result_word(st.result);
            let _ = write!(
                body,
                "<section id=\"step-{i}\"><h3>{} <span id=\"result-{i}\" class=\"r {w}\">{w}</span></h3>{}\
                 <pre id=\"log-{i}\" data-offset=\"{end}\">{}</pre></section>",
                esc(&st.name),
                if start > 0 {
                    format!(
                        "<p><small>the last {} KiB; <a href=\"{p}/api/v1/builds/{id}/steps/{i}/log\">all of it</a></small></p>",
                        TAIL >> 10,
                        i = st.index
                    )
                } else {
                    String::new()
                },
                esc(&String::from_utf8_lossy(&tail)),
                i = st.index,
            );
        }
        body.push_str("</div></div>");
        Ok((format!("build #{id}"), body, BUILD_SCRIPT.to_string()))
    })
    .await
}
